//! The broker blocking publishers (a resource alarm), in a test binary of its own: the alarm
//! blocks every publisher on the broker, and cargo runs test binaries one at a time, so no other
//! test meets it.

use std::time::{Duration, Instant};

use polyai_relay_testkit::{
    backend,
    helpers::{completed, spawn_app_with, Options},
};

/// The memory alarm, raised for the length of a test and lowered again even if it fails, to
/// the watermark the broker had before (0.4 is 3.10's default, 0.6 is 4.x's; an operator may
/// have set another). One test at a time holds it: another's lowering it would end this one's
/// outage early, and its reading of the watermark would find 0.
struct MemoryAlarm {
    previous: Vec<String>,
    /// Released after `drop` restored the watermark (fields drop after it).
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static ALARM_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl MemoryAlarm {
    async fn raise() -> Self {
        let turn = ALARM_TURN.lock().await;
        let previous = current_watermark();
        set_watermark(&["0"]);
        Self { previous, _turn: turn }
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

    let alarm = MemoryAlarm::raise().await;
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

#[tokio::test]
async fn a_broker_blocking_publishers_is_answered_from_the_spool_which_drains_after_the_alarm() {
    let deadline = Duration::from_millis(800);
    let dir = backend::TempDir::new();
    let spool = polyai_relay::config::SpoolSettings { dir: dir.0.join("spool"), max_bytes: 1 << 30 };
    let app = spawn_app_with(Options { ack_deadline: deadline, spool: Some(spool), ..Options::default() }).await;
    // With a spool /readyz is 200 at once; wait for the broker itself, and for the spool to
    // forward what came before it.
    let mut accepted = app.post_until_straight("CAbefore").await;
    app.wait_for_spool(0).await;
    let spooled = || polyai_relay::queue::embedded::EmbeddedQueue::count_in(&dir.0.join("spool")).unwrap();

    let alarm = MemoryAlarm::raise().await;
    for i in 0..5 {
        let id = format!("CAblocked{i}");
        let started = Instant::now();
        let response = app.post_signed(&completed(&id)).await;
        assert_eq!(response.status(), 204, "{id}");
        assert_eq!(response.headers()["x-relay-outcome"], "spooled");
        assert!(started.elapsed() < deadline + Duration::from_millis(500), "answered after {:?}", started.elapsed());
        accepted.push(id);
    }
    assert_eq!(app.admin_get("/readyz").await.status(), 200, "ready while the spool accepts");
    assert_eq!(spooled(), 5);

    drop(alarm);
    let mut enriched = std::collections::HashSet::new();
    while !accepted.iter().all(|id| enriched.contains(id)) {
        let record = app.next_record().await;
        enriched.insert(record.json["conversation"]["id"].as_str().unwrap().to_owned());
    }
}
