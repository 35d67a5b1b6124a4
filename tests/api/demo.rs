//! `polyai-relay demo` from the built binary: no broker, no PolyAI account, to completion.

use std::time::Duration;

use crate::{
    backend::TempDir,
    process::{relay_command, run_to_exit_with_stdout},
};

#[tokio::test]
async fn the_demo_runs_to_completion_and_prints_every_record() {
    let dir = TempDir::new();
    let data_dir = dir.0.join("demo").display().to_string();
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["demo", "--data-dir", &data_dir], &[]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("sent 8 signed webhooks, 8 accepted with 204"), "{stdout}");
    assert!(stdout.contains("all 8 enriched records landed"), "{stdout}");
    let printed = stdout.lines().filter(|l| l.starts_with("completed") || l.starts_with("handoff")).count();
    assert_eq!(printed, 8, "{stdout}");
    let records = std::fs::read_to_string(dir.0.join("demo/conversations.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 8);
}

#[tokio::test]
async fn the_demo_stops_cleanly_on_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = TempDir::new();
    let data_dir = dir.0.join("demo").display().to_string();
    let mut child = relay_command(&["demo", "--keep-running", "--data-dir", &data_dir]).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let waiting = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("Ctrl-C to stop") {
                return;
            }
        }
        panic!("the demo ended before waiting for Ctrl-C");
    };
    tokio::time::timeout(Duration::from_secs(60), waiting).await.expect("the tour finished");
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("stopped").unwrap();
    assert_eq!(status.code(), Some(0));
}
