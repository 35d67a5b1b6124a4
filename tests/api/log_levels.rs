//! `RUST_LOG` as the binary reads it: levels below `info` are written when asked for, a target's
//! own level applies to it alone, and a value it cannot read is named in a warning.

use crate::process::run_to_exit;

/// A health check of a port nothing listens on: it fails at once, after its HTTP client has
/// logged its connection attempt at debug level (hyper's `connecting to …`).
const NOWHERE: &[&str] = &["healthcheck", "--url", "http://127.0.0.1:1/readyz"];

fn debug_lines(stderr: &str) -> usize {
    stderr.lines().filter(|line| line.contains(r#""level":"DEBUG""#)).count()
}

#[tokio::test]
async fn rust_log_debug_writes_debug_lines_and_the_default_writes_none() {
    let (code, stderr) = run_to_exit(NOWHERE, &[("RUST_LOG", "debug")]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(debug_lines(&stderr) > 0, "RUST_LOG=debug writes debug lines:\n{stderr}");

    let (code, stderr) = run_to_exit(NOWHERE, &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(debug_lines(&stderr), 0, "{stderr}");
}

#[tokio::test]
async fn a_targets_level_applies_to_that_target_only() {
    let (_, stderr) = run_to_exit(NOWHERE, &[("RUST_LOG", "info,hyper_util=debug")]).await;
    let debug: Vec<&str> = stderr.lines().filter(|line| line.contains(r#""level":"DEBUG""#)).collect();
    assert!(!debug.is_empty(), "{stderr}");
    assert!(debug.iter().all(|line| line.contains(r#""target":"hyper_util"#)), "{stderr}");

    let (_, stderr) = run_to_exit(NOWHERE, &[("RUST_LOG", "debug,hyper_util=info")]).await;
    assert!(!stderr.lines().any(|line| line.contains(r#""level":"DEBUG""#) && line.contains("hyper_util")), "{stderr}");
}

#[tokio::test]
async fn an_unreadable_rust_log_is_named_in_a_warning_and_the_default_applies() {
    let (code, stderr) = run_to_exit(NOWHERE, &[("RUST_LOG", "info,hyper_util=loud")]).await;
    assert_eq!(code, Some(1), "{stderr}");
    let warning = stderr.lines().find(|line| line.contains("RUST_LOG")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(warning.contains(r#""level":"WARN""#) && warning.contains("hyper_util=loud"), "{warning}");
    assert_eq!(debug_lines(&stderr), 0, "{stderr}");
}
