//! `polyai-relay send` against the real receiver: signed the way the relay verifies, counted right.

use std::time::Duration;

use crate::{
    backend::{Backend, TempDir},
    certs,
    helpers::{spawn_app_with, Options, SECRET},
    process::{relay_command, run_to_exit_with_stdout},
    tls_front::TlsFront,
};

fn receiver_only() -> Options {
    Options { backend: Backend::Embedded, worker: false, ..Options::default() }
}

#[tokio::test]
async fn a_load_run_reports_throughput_statuses_and_percentiles_and_every_event_arrives() {
    let app = spawn_app_with(receiver_only()).await;
    let url = app.url("/polyai-events");
    let args = ["send", "--url", &url, "--count", "40", "--concurrency", "4", "--body-size", "600"];
    let (code, stdout, stderr) = run_to_exit_with_stdout(&args, &[("POLYAI_WEBHOOK_SECRET", SECRET)]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("requests: 40"), "{stdout}");
    assert!(stdout.contains("204: 40"), "{stdout}");
    assert!(stdout.contains("p50") && stdout.contains("p99") && stdout.contains("max"), "{stdout}");
    assert_eq!(app.queue.pending().await, 40, "every event answered 204 is queued");
}

#[tokio::test]
async fn both_schemes_verify_and_a_single_send_prints_its_outcome() {
    let app = spawn_app_with(receiver_only()).await;
    let url = app.url("/polyai-events");
    for scheme in ["timestamped", "body"] {
        let args =
            ["send", "--url", &url, "--scheme", scheme, "--conversation-id", "CAone", "--type", "handoff.created"];
        let (code, stdout, _) = run_to_exit_with_stdout(&args, &[("POLYAI_WEBHOOK_SECRET", SECRET)]).await;
        assert_eq!(code, Some(0), "{scheme}: {stdout}");
        assert!(stdout.starts_with("204 evt_") && stdout.contains("CAone"), "{stdout}");
    }
    assert_eq!(app.queue.pending().await, 2, "every event answered 204 is queued");
}

#[tokio::test]
async fn the_secret_can_come_from_a_file() {
    let app = spawn_app_with(receiver_only()).await;
    let dir = crate::backend::TempDir::new();
    let file = dir.0.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let url = app.url("/polyai-events");
    let file = file.display().to_string();
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["send", "--url", &url, "--secret-file", &file], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("204 "), "{stdout}");
    assert_eq!(app.queue.pending().await, 1, "every event answered 204 is queued");

    let (code, _, stderr) = run_to_exit_with_stdout(&["send", "--url", &url], &[]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("POLYAI_WEBHOOK_SECRET"), "{stderr}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_the_exit_code_says_so() {
    let app = spawn_app_with(receiver_only()).await;
    let url = app.url("/polyai-events");
    let args = ["send", "--url", &url, "--count", "3"];
    let (code, stdout, stderr) = run_to_exit_with_stdout(&args, &[("POLYAI_WEBHOOK_SECRET", "wrong")]).await;
    assert_eq!(code, Some(1));
    assert!(stdout.contains("401: 3"), "{stdout}");
    assert!(stderr.contains("not every request"), "{stderr}");
    assert_eq!(app.queue.pending().await, 0);
}

#[tokio::test]
async fn a_url_that_is_not_http_is_refused_before_anything_is_sent() {
    for (url, expected) in [("ftp://127.0.0.1/polyai-events", "http:// or https://"), ("not a url", "--url not a url")]
    {
        let (code, _, stderr) =
            run_to_exit_with_stdout(&["send", "--url", url], &[("POLYAI_WEBHOOK_SECRET", SECRET)]).await;
        assert_eq!(code, Some(1), "{url}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
    }
}

/// `https://` goes through reqwest and its certificate checks: events reach the receiver over a
/// TLS connection whose certificate is verified against the trusted roots, and a certificate from
/// an authority the sender does not trust sends nothing.
#[tokio::test]
async fn an_https_url_is_sent_over_verified_tls() {
    let app = spawn_app_with(receiver_only()).await;
    let dir = TempDir::new();
    certs::make(&dir.0, "localhost");
    let front = TlsFront::start(&dir.0, app.address).await;
    let url = format!("https://localhost:{}/polyai-events", front.address.port());
    let args = ["send", "--url", &url, "--count", "5", "--concurrency", "2"];
    let ca = dir.0.join("ca.pem").display().to_string();
    let trusted = [("POLYAI_WEBHOOK_SECRET", SECRET), ("SSL_CERT_FILE", ca.as_str())];
    let (code, stdout, stderr) = run_to_exit_with_stdout(&args, &trusted).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("204: 5"), "{stdout}");
    assert_eq!(app.queue.pending().await, 5, "every event answered 204 is queued");

    // The system's roots only: the test's authority is not among them, and the summary says so.
    let (code, stdout, stderr) = run_to_exit_with_stdout(&args, &[("POLYAI_WEBHOOK_SECRET", SECRET)]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("204"), "{stdout}");
    let reason = stdout.lines().find(|line| line.starts_with("first error: ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(reason.contains("certificate"), "{reason}");
    assert!(!stdout.contains(&url) && !stdout.contains(SECRET), "{stdout}");
    assert_eq!(app.queue.pending().await, 5, "nothing more arrived");
}

/// `send … | head -1`: a reader that goes away before the report is written is not an error,
/// and the tool does not panic over it.
#[tokio::test]
async fn a_reader_that_stops_early_ends_the_run_quietly() {
    let app = spawn_app_with(receiver_only()).await;
    let url = app.url("/polyai-events");
    let mut command = relay_command(&["send", "--url", &url, "--count", "3"]);
    command.env("POLYAI_WEBHOOK_SECRET", SECRET);
    let mut child = command.spawn().expect("binary runs");
    // The read end closes before anything is written to it.
    drop(child.stdout.take());
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("exits in time")
        .expect("exit status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(app.queue.pending().await, 3, "every event answered 204 is queued");
}
