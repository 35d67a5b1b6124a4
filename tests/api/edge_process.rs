//! Attacks on the public edge (design §10) against the real binary, which has its own file
//! descriptors, memory, metrics and logs to measure: a connection flood past the fd limit,
//! oversized headers (RSS read from /proc), unsigned bodies that never arrive, forged log lines.
//! Each is bounded in connections and time.

use std::{os::unix::fs::PermissionsExt, process::Stdio, time::Duration};

use futures_util::future::join_all;
use polyai_relay_devtools::sender::{signed_post, SendScheme};
use secrecy::SecretString;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
};

use crate::{
    backend::{Backend, TempDir, TestQueue},
    config::{refused, Refused},
    fake_polyai::FakePolyai,
    helpers::{http, post_event, SECRET},
    poll::poll_until,
    process::{as_refs, binary, run_to_exit, RelayProcess},
};

/// `polyai-relay serve` on the embedded queue, with `env` on top.
async fn serve(queue: &TestQueue, env: &[(&str, &str)]) -> RelayProcess {
    serve_command(relay_in_shell(None), queue, env).await
}

/// The binary through `sh`, so that `ulimit -n` can lower its file-descriptor limit first.
fn relay_in_shell(max_files: Option<u32>) -> Command {
    let limit = max_files.map(|n| format!("ulimit -n {n} && ")).unwrap_or_default();
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("{limit}exec \"$0\" serve")])
        .arg(binary())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn serve_command(command: Command, queue: &TestQueue, env: &[(&str, &str)]) -> RelayProcess {
    let mut all: Vec<(String, String)> = queue.env();
    all.push(("POLYAI_WEBHOOK_SECRET".into(), SECRET.into()));
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs = as_refs(&all);
    let relay = RelayProcess::spawn_command(command, &pairs).await;
    relay.wait_ready().await;
    relay
}

/// A `/proc/{pid}/status` field in kB (VmRSS: resident now; VmHWM: the most it ever was).
fn memory_kb(relay: &RelayProcess, field: &str) -> u64 {
    let pid = relay.child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap()
}

async fn metrics(relay: &RelayProcess) -> String {
    http().get(relay.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// Waits until the relay's `/metrics` say `done`: the binary tells what it holds only there, so
/// it is asked until it does.
async fn wait_for_metrics(relay: &RelayProcess, done: impl Fn(&str) -> bool) {
    poll_until(Duration::from_secs(20), || async {
        let metrics = metrics(relay).await;
        if done(&metrics) {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
}

/// Five signed webhooks, each answered 204 while `meanwhile` holds.
async fn signed_webhooks_pass(relay: &RelayProcess, meanwhile: &str) {
    let http = http();
    for i in 0..5 {
        let (_, status) = post_event(&http, &relay.url("/polyai-events"), format!("evt-signed-{i}")).await;
        assert_eq!(status, Some(204), "signed webhook {i} while {meanwhile}");
    }
}

#[tokio::test]
async fn a_connection_flood_past_the_fd_limit_leaves_signed_webhooks_answered() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    let env = [("RELAY_MAX_CONNECTIONS", "64"), ("RELAY_HEADER_TIMEOUT", "1s")];
    let relay = serve_command(relay_in_shell(Some(256)), &queue, &env).await;
    // More silent connections than the process has file descriptors. A dropped SYN makes a
    // connect wait for the kernel's retry: such a connect is given up, and the flood goes on.
    let mut flood = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while flood.len() < 400 && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(relay.address)).await
        {
            flood.push(stream);
        }
    }
    assert!(flood.len() > 256, "only {} connections", flood.len());
    let http = polyai_relay::http_client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let (_, status) = post_event(&http, &relay.url("/polyai-events"), "evt-flood".into()).await;
    assert_eq!(status, Some(204), "{}", relay.logs());
    let health = http.get(relay.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    drop(flood);
}

#[tokio::test]
async fn a_flood_of_oversized_headers_is_refused_within_a_memory_bound() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    let relay = serve(&queue, &[]).await;
    let baseline = memory_kb(&relay, "VmRSS:");
    // 200 connections, each 300 KiB of a head that never ends (an old relay buffered ~400 KB each).
    let attack = join_all((0..200).map(|_| async {
        let mut stream = TcpStream::connect(relay.address).await.unwrap();
        let head = format!("POST /polyai-events HTTP/1.1\r\nhost: relay\r\nx-filler: {}", "a".repeat(300 << 10));
        // The relay answers 431 and closes after RELAY_MAX_HEADER_BYTES: the rest of the write may fail.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
    }));
    let answers = tokio::time::timeout(Duration::from_secs(20), attack).await.expect("every connection is closed");
    assert!(answers.iter().all(|a| a.contains("431")), "{:?}", &answers[..3]);
    let peak = memory_kb(&relay, "VmHWM:");
    assert!(peak < baseline + 32 * 1024, "RSS peaked at {peak} kB from {baseline} kB");
}

#[tokio::test]
async fn unsigned_bodies_that_never_arrive_take_no_capacity_from_signed_webhooks() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    let relay = serve(&queue, &[("RELAY_MAX_IN_FLIGHT", "2")]).await;
    // Ten times the in-flight limit in requests that announce a body and never send it.
    let mut holders = Vec::new();
    for _ in 0..20 {
        let mut holder = TcpStream::connect(relay.address).await.unwrap();
        holder.write_all(b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: 100\r\n\r\n{").await.unwrap();
        holders.push(holder);
    }
    wait_for_metrics(&relay, |metrics| metrics.contains("relay_webhook_bodies_reading 20")).await;
    signed_webhooks_pass(&relay, "unsigned bodies hang").await;
    drop(holders);
}

#[tokio::test]
async fn unsigned_bodies_held_open_take_no_more_memory_than_the_budget_and_signed_webhooks_pass() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    // RELAY_MAX_BODY stays 1MiB: four such bodies fit the budget at most, a fifth does not.
    let relay = serve(&queue, &[("RELAY_BODY_MEMORY", "4MiB")]).await;
    let baseline = memory_kb(&relay, "VmRSS:");
    // A hundred requests that declare a megabyte, send all of it but the last byte, and stall.
    let holders: Vec<_> = (0..100)
        .map(|_| {
            let address = relay.address;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(address).await.unwrap();
                let head = "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: 1048576\r\n\r\n";
                stream.write_all(head.as_bytes()).await.unwrap();
                // A refused request's connection is closed under the write.
                let _ = stream.write_all(&vec![b'x'; (1 << 20) - 1]).await;
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
            })
        })
        .collect();
    // At most four are read (which ones, and whether a fourth fits beside what refused bodies
    // held a moment, depends on how their bytes interleave); the others are refused once their
    // bytes find the budget spent, or cut for newer ones once they held it a second. Every one
    // is accounted for, before any times out.
    let count = |metrics: &str, prefix: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(prefix));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    };
    wait_for_metrics(&relay, |metrics| {
        let refused = count(metrics, r#"relay_webhook_requests_total{outcome="body_memory_full""#)
            + count(metrics, r#"relay_webhook_requests_total{outcome="body_cut""#);
        let reading = count(metrics, "relay_webhook_bodies_reading ");
        refused >= 96 && refused + reading == 100
    })
    .await;
    signed_webhooks_pass(&relay, "the budget is spent").await;
    let peak = memory_kb(&relay, "VmHWM:");
    assert!(peak < baseline + 24 * 1024, "RSS peaked at {peak} kB from {baseline} kB");
    for holder in holders {
        holder.abort();
    }
}

/// Heads that declare a megabyte and send no body cost a client nothing: were declared lengths
/// taken from the budget, forty of them would spend it (32 MiB) for as long as their bodies may
/// take, and every signed event over the free bytes each body has would get 503.
#[tokio::test]
async fn heads_declaring_bodies_they_never_send_do_not_spend_the_budget_of_larger_signed_events() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    let relay = serve(&queue, &[]).await;
    let mut heads = Vec::new();
    for _ in 0..40 {
        let mut head = TcpStream::connect(relay.address).await.unwrap();
        head.write_all(b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: 1048576\r\n\r\n")
            .await
            .unwrap();
        heads.push(head);
    }
    wait_for_metrics(&relay, |metrics| metrics.contains("relay_webhook_bodies_reading 40")).await;
    // 20 KiB: more than the free bytes every body has.
    let body = serde_json::json!({"type": "conversation.completed", "data": {"conversation_id": "CAlarge", "notes": "x".repeat(20 << 10)}});
    let secret = SecretString::from(SECRET);
    let request = signed_post(
        &http(),
        relay.url("/polyai-events"),
        &secret,
        SendScheme::Timestamped,
        "evt_large",
        body.to_string(),
    );
    assert_eq!(request.send().await.unwrap().status(), 204, "{}", relay.logs());
    drop(heads);
}

/// Unsigned bodies stalled a byte short, holding the whole budget, are cut, oldest first, for a
/// larger signed event once they have held it a while: refused instead, it would wait for as
/// long as a client without the secret kept the budget spent (a few MB/s does).
#[tokio::test]
async fn a_larger_signed_event_cuts_the_oldest_unsigned_bodies_holding_the_budget() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    let relay = serve(&queue, &[("RELAY_BODY_MEMORY", "4MiB")]).await;
    // Four bodies of a megabyte, each a byte short, one after the other: oldest first, they
    // hold all of the budget but 4 × 16 KiB.
    let mut holders = Vec::new();
    for held in 1..=4 {
        let mut holder = TcpStream::connect(relay.address).await.unwrap();
        let head = "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: 1048576\r\n\r\n";
        holder.write_all(head.as_bytes()).await.unwrap();
        holder.write_all(&vec![b'x'; (1 << 20) - 1]).await.unwrap();
        let holds = held * ((1 << 20) - 1 - (16 << 10));
        wait_for_metrics(&relay, |m| m.contains(&format!("relay_webhook_body_memory_bytes {holds}\n"))).await;
        holders.push(holder);
    }
    // What the bodies hold is theirs for a while: a body that arrives at network speed is read
    // within it. Only then may a newer one cut them.
    tokio::time::sleep(polyai_relay::receiver::BODY_CUT_AFTER).await;
    // 200 KiB: more than what is left.
    let notes = "x".repeat(200 << 10);
    let body =
        serde_json::json!({"type": "conversation.completed", "data": {"conversation_id": "CAlarge", "notes": notes}});
    let secret = SecretString::from(SECRET);
    let url = relay.url("/polyai-events");
    let request = signed_post(&http(), url, &secret, SendScheme::Timestamped, "evt_large", body.to_string());
    assert_eq!(request.send().await.unwrap().status(), 204, "{}", relay.logs());
    // The oldest was cut and answered 503; the others read on.
    let mut answer = Vec::new();
    holders[0].read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
    wait_for_metrics(&relay, |m| {
        m.contains("relay_webhook_requests_total{outcome=\"body_cut\",project=\"default\"} 1\n")
            && m.contains("relay_webhook_bodies_reading 3\n")
    })
    .await;
    drop(holders);
    wait_for_metrics(&relay, |m| m.contains("relay_webhook_body_memory_bytes 0\n")).await;
}

/// A signed event whose type carries a newline, a forged log line and a screen-clearing code.
async fn post_forged_type(relay: &RelayProcess) {
    let forged = "conversation.forged\n2026-01-01T00:00:00.000000Z ERROR forged: line\u{1b}[2J";
    let body = serde_json::json!({"type": forged, "data": {"conversation_id": "CA1"}}).to_string();
    let secret = SecretString::from(SECRET);
    let request =
        signed_post(&http(), relay.url("/polyai-events"), &secret, SendScheme::Timestamped, "evt_forged", body);
    assert_eq!(request.send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn request_fields_cannot_forge_log_lines_in_either_format() {
    for format in ["pretty", "json"] {
        let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
        let polyai = FakePolyai::start().await;
        let env = queue.relay_env(&polyai.base_url, &[("RELAY_LOG_FORMAT", format), ("RELAY_EVENTS", "*")]);
        let env = as_refs(&env);
        let relay = RelayProcess::spawn(&["run"], &env).await;
        relay.wait_ready().await;
        post_forged_type(&relay).await;
        // The worker logs the event type of what it enriched.
        let logs = relay.wait_for_log("event enriched", Duration::from_secs(10)).await;
        for line in logs.lines() {
            assert!(!line.starts_with("2026-01-01T00:00:00"), "{format}: a forged line: {line:?}");
            assert!(!line.contains("\u{1b}[2J"), "{format}: a raw escape code: {line:?}");
            if format == "json" {
                assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not one JSON object: {line:?}");
            }
        }
        let enriched = logs.lines().find(|l| l.contains("event enriched")).unwrap();
        assert!(enriched.contains("conversation.forged\\n2026"), "{format}: escaped in place: {enriched}");
    }
}

#[tokio::test]
async fn yes_no_settings_take_1_0_yes_no_on_off() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    let polyai = FakePolyai::start().await;
    let env = queue.relay_env(&polyai.base_url, &[("RELAY_FETCH_AUDIO", "1"), ("RELAY_AUDIO_REDACTED", "Off")]);
    let env = as_refs(&env);
    let mut relay = RelayProcess::spawn(&["run"], &env).await;
    relay.wait_ready().await;
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));
    let mut bad = env.clone();
    bad.push(("RELAY_FETCH_AUDIO", "maybe"));
    // A value the parser refuses: clap's usage error (exit 2), naming the variable.
    refused(Refused::ByParser, &["run"], &bad, &["RELAY_FETCH_AUDIO", "maybe", "yes/no"]).await;
}

#[tokio::test]
async fn a_data_directory_the_relay_creates_is_owner_only() {
    let parent = TempDir::new();
    let data = parent.0.join("relay/data");
    let data_dir = data.display().to_string();
    let env = [("POLYAI_WEBHOOK_SECRET", SECRET), ("RELAY_DATA_DIR", data_dir.as_str())];
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    relay.wait_ready().await;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&parent.0.join("relay")), mode(&data)), (0o700, 0o700));
    assert_eq!(mode(&data.join("queue.sqlite3")), 0o600);
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));
}

/// A recordings directory the relay cannot use stops start-up. Found only when the first
/// recording came, every voice call's event would be retried and dead-lettered while `/readyz`
/// answered 200.
#[tokio::test]
async fn an_audio_directory_the_relay_cannot_write_stops_start_up() {
    let polyai = FakePolyai::start().await;
    let parent = TempDir::new();
    // A file where the directory's parent should be: nothing can be created under it.
    std::fs::write(parent.0.join("not-a-directory"), b"").unwrap();
    let audio_dir = parent.0.join("not-a-directory/audio").display().to_string();
    for backend in [Backend::Embedded, Backend::Amqp] {
        let queue = TestQueue::new(backend, polyai_relay::config::EventTypes::All).await;
        let env = queue.relay_env(&polyai.base_url, &[("RELAY_FETCH_AUDIO", "1"), ("RELAY_AUDIO_DIR", &audio_dir)]);
        for command in ["run", "work"] {
            let (code, stderr) = run_to_exit(&[command], &as_refs(&env)).await;
            assert_eq!(code, Some(1), "{command}: {stderr}");
            // Before anything reaches for the broker: the error is the last thing it says.
            let last = stderr.lines().rfind(|line| !line.trim().is_empty()).unwrap_or_default();
            assert!(last.contains("RELAY_AUDIO_DIR") && last.contains(&audio_dir), "{command}: {stderr}");
        }
    }
}
