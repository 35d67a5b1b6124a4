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

/// The memory alarm, raised for the length of a test and lowered again even if it fails.
struct MemoryAlarm;

impl MemoryAlarm {
    fn raise() -> Self {
        set_watermark("0");
        Self
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        // 0.4 is RabbitMQ's default; .ci/run also restores it before the tests.
        set_watermark("0.4");
    }
}

fn set_watermark(value: &str) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["set_vm_memory_high_watermark", value])
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
