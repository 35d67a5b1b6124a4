//! The broker blocking publishers (a resource alarm), in a test binary of its own: the alarm
//! blocks every publisher on the broker, and cargo runs test binaries one at a time, so no other
//! test meets it.

// This binary borrows the api suite's helpers and uses only some of them.
#![allow(dead_code, unused_imports, unused_macros)]

#[path = "../api/backend.rs"]
mod backend;
#[path = "../api/broker.rs"]
mod broker;
#[path = "../api/fake_polyai.rs"]
mod fake_polyai;
#[path = "../api/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use helpers::{completed, spawn_app_with, Options};

/// The memory alarm, raised for the length of a test and lowered again even if it fails, to
/// the watermark the broker had before (0.4 is 3.10's default, 0.6 is 4.x's; an operator may
/// have set another).
struct MemoryAlarm {
    previous: Vec<String>,
}

impl MemoryAlarm {
    fn raise() -> Self {
        let previous = current_watermark();
        set_watermark(&["0"]);
        Self { previous }
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        let previous: Vec<&str> = self.previous.iter().map(String::as_str).collect();
        set_watermark(&previous);
    }
}

/// The watermark as `set_vm_memory_high_watermark` takes it: a fraction, or `absolute` bytes.
fn current_watermark() -> Vec<String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["status", "--formatter", "json"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status is JSON");
    let setting = &status["vm_memory_high_watermark_setting"];
    if let Some(relative) = setting["relative"].as_f64() {
        assert!(relative > 0.0, "the broker already has a memory alarm raised (watermark 0)");
        vec![relative.to_string()]
    } else if let Some(absolute) = setting["absolute"].as_u64() {
        vec!["absolute".to_owned(), absolute.to_string()]
    } else {
        panic!("unknown watermark setting: {setting}")
    }
}

fn set_watermark(value: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .arg("set_vm_memory_high_watermark")
        .args(value)
        .output()
        .expect("rabbitmqctl runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn a_broker_blocking_publishers_gets_503s_within_the_deadline_and_recovers() {
    let deadline = Duration::from_millis(800);
    let app = spawn_app_with(Options { ack_deadline: deadline, worker: false, ..Options::default() }).await;
    assert_eq!(app.post_signed(&completed("CAbefore")).await.status(), 204);

    let alarm = MemoryAlarm::raise();
    for i in 0..3 {
        let started = Instant::now();
        let response = app.post_signed(&completed(&format!("CAblocked{i}"))).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        assert!(started.elapsed() < deadline + Duration::from_millis(500), "hung for {:?}", started.elapsed());
    }
    app.wait_for_readiness(503).await;

    drop(alarm);
    app.wait_for_readiness(200).await;
    assert_eq!(app.post_signed(&completed("CAafter")).await.status(), 204);
}
