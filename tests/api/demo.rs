//! `polyai-relay demo` from the built binary: no broker, no PolyAI account, to completion.

use std::time::Duration;

use crate::{
    backend::TempDir,
    process::{relay_command, run_to_exit_with_stdout},
};

#[tokio::test]
async fn the_demo_runs_to_completion_and_prints_every_record_of_both_projects() {
    let dir = TempDir::new();
    let data_dir = dir.0.join("demo").display().to_string();
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["demo", "--data-dir", &data_dir], &[]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for project in ["acme-uk", "acme-us"] {
        assert!(stdout.contains(&format!("/polyai-events/{project}")), "{stdout}");
    }
    // Five conversations of each project, three of them handoffs (two events each).
    assert!(stdout.contains("sent 16 signed webhooks, 16 accepted with 204"), "{stdout}");
    assert!(stdout.contains("all 16 enriched records landed"), "{stdout}");
    assert!(stdout.contains("(acme-uk 8, acme-us 8)"), "{stdout}");

    // Each printed record names its project first.
    let printed = |project: &str| {
        let record = |line: &&str| {
            let mut words = line.split_whitespace();
            words.next() == Some(project) && matches!(words.next(), Some("completed" | "handoff"))
        };
        stdout.lines().filter(record).count()
    };
    assert_eq!((printed("acme-uk"), printed("acme-us")), (8, 8), "{stdout}");

    // The records say their project. All were fetched: asked of the other project's tenant (with
    // its key and ids), a conversation is a 404, and the demo ends in dead letters.
    let records = std::fs::read_to_string(dir.0.join("demo/conversations.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = records.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 16);
    for project in ["acme-uk", "acme-us"] {
        let theirs = records.iter().filter(|r| r["project"] == project).count();
        assert_eq!(theirs, 8, "records of {project}: {records:#?}");
    }
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
