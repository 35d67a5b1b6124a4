//! Every status code of design §3, through the real router and a real broker.

use std::time::Duration;

use polyai_relay::{config::EventTypes, signature::sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{completed, header, now, spawn_app, spawn_app_with, Options, PREVIOUS_SECRET, SECRET};

fn receiver_only() -> Options {
    Options { worker: false, ..Options::default() }
}

#[tokio::test]
async fn a_signed_event_is_answered_204_and_enqueued_with_every_property() {
    let app = spawn_app_with(receiver_only()).await;
    let body = completed("CA0001");
    let ts = now().to_string();
    let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
    let response = app
        .post(&body, &[("x-polyai-timestamp", &ts), ("x-polyai-signature", &signature), ("x-polyai-event-id", "evt_1")])
        .await;
    assert_eq!(response.status(), 204);

    let delivery = app.broker.next_message(&app.broker.topology.enrich_queue).await;
    assert_eq!(delivery.data, body.as_bytes(), "the body is forwarded byte for byte");
    assert_eq!(delivery.routing_key.as_str(), "conversation.completed");
    let p = &delivery.properties;
    assert_eq!(p.content_type().as_ref().unwrap().as_str(), "application/json");
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(p.message_id().as_ref().unwrap().as_str(), "evt_1");
    assert_eq!(p.kind().as_ref().unwrap().as_str(), "conversation.completed");
    assert_eq!(p.app_id().as_ref().unwrap().as_str(), "polyai-relay");
    assert!(p.timestamp().unwrap() >= now() as u64 - 60);
    assert_eq!(header(&delivery, "x-polyai-timestamp").as_deref(), Some(ts.as_str()));
    assert_eq!(header(&delivery, "x-relay-signature-scheme").as_deref(), Some("timestamped"));
    let received_at = header(&delivery, "x-relay-received-at").unwrap();
    assert!(time::OffsetDateTime::parse(&received_at, &time::format_description::well_known::Rfc3339).is_ok());
}

#[tokio::test]
async fn a_body_signed_event_is_accepted_and_its_id_is_a_digest_of_the_body() {
    let app = spawn_app_with(receiver_only()).await;
    let body = completed("CA0002");
    let signature = sign(SECRET.as_bytes(), None, body.as_bytes());
    assert_eq!(app.post(&body, &[("x-polyai-signature", &signature)]).await.status(), 204);

    let delivery = app.broker.next_message(&app.broker.topology.enrich_queue).await;
    assert_eq!(header(&delivery, "x-relay-signature-scheme").as_deref(), Some("body"));
    let id = delivery.properties.message_id().as_ref().unwrap().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
}

#[tokio::test]
async fn the_previous_secret_is_still_accepted() {
    let app = spawn_app_with(receiver_only()).await;
    let body = completed("CA0003");
    let ts = now().to_string();
    let signature = sign(PREVIOUS_SECRET.as_bytes(), Some(&ts), body.as_bytes());
    let response = app.post(&body, &[("x-polyai-timestamp", &ts), ("x-polyai-signature", &signature)]).await;
    assert_eq!(response.status(), 204);
    app.broker.wait_for_count(&app.broker.topology.enrich_queue, 1).await;
}

#[tokio::test]
async fn unsigned_badly_signed_and_stale_requests_get_401_and_enqueue_nothing() {
    let app = spawn_app_with(receiver_only()).await;
    let body = completed("CA0004");
    let ts = now().to_string();
    let stale = (now() - 301).to_string();
    let good = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
    let wrong_secret = sign(b"not-the-secret", Some(&ts), body.as_bytes());
    let stale_signature = sign(SECRET.as_bytes(), Some(&stale), body.as_bytes());
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no signature", vec![("x-polyai-timestamp", &ts)]),
        ("wrong secret", vec![("x-polyai-timestamp", &ts), ("x-polyai-signature", &wrong_secret)]),
        ("not hex", vec![("x-polyai-timestamp", &ts), ("x-polyai-signature", "zz")]),
        ("stale", vec![("x-polyai-timestamp", &stale), ("x-polyai-signature", &stale_signature)]),
    ];
    for (name, headers) in cases {
        let response = app.post(&body, &headers).await;
        assert_eq!(response.status(), 401, "{name}");
        assert!(response.bytes().await.unwrap().is_empty(), "{name}: no detail for the sender");
    }
    // The same body, correctly signed, with one byte changed.
    let tampered = body.replace("CA0004", "CA0005");
    let response = app.post(&tampered, &[("x-polyai-timestamp", &ts), ("x-polyai-signature", &good)]).await;
    assert_eq!(response.status(), 401);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"relay_signature_failures_total{reason="stale_timestamp"}"#), "{metrics}");
    assert_eq!(app.broker.ready_count(&app.broker.topology.enrich_queue).await, 0);
}

#[tokio::test]
async fn a_verified_body_that_is_not_an_event_gets_400() {
    let app = spawn_app_with(receiver_only()).await;
    for body in ["[1,2]", "{}", r#"{"data":{"conversation_id":"CA1"}}"#, "not json"] {
        assert_eq!(app.post_signed(body).await.status(), 400, "{body}");
    }
    assert_eq!(app.broker.ready_count(&app.broker.topology.enrich_queue).await, 0);
}

#[tokio::test]
async fn types_not_forwarded_and_filtered_environments_are_acknowledged_and_dropped() {
    let options = Options { environments: Some(vec!["live".into()]), ..receiver_only() };
    let app = spawn_app_with(options).await;
    let alert = r#"{"event_type":"alerts.triggered","alert":{"id":"ar_1"}}"#;
    let sandbox = r#"{"type":"conversation.completed","data":{"conversation_id":"CA9","environment":"sandbox"}}"#;
    for body in [alert, sandbox] {
        let response = app.post_signed(body).await;
        assert_eq!(response.status(), 204);
        assert_eq!(response.headers()["x-relay-outcome"], "ignored");
    }
    let live = app.post_signed(&completed("CA0006")).await;
    assert_eq!(live.status(), 204);
    assert!(live.headers().get("x-relay-outcome").is_none());
    app.broker.wait_for_count(&app.broker.topology.enrich_queue, 1).await;
}

#[tokio::test]
async fn every_type_is_forwarded_with_a_star() {
    let app = spawn_app_with(Options { event_types: EventTypes::All, ..receiver_only() }).await;
    let alert = r#"{"event_type":"alerts.triggered","alert":{"id":"ar_1"}}"#;
    let response = app.post_signed(alert).await;
    assert_eq!(response.status(), 204);
    assert!(response.headers().get("x-relay-outcome").is_none());
    let delivery = app.broker.next_message(&app.broker.topology.enrich_queue).await;
    assert_eq!(delivery.routing_key.as_str(), "alerts.triggered");
}

/// Sends raw bytes and returns the status line, or `None` when the server answered nothing in time.
async fn raw_exchange(app: &crate::helpers::TestApp, head: &str, body_part: &[u8]) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_part).await.unwrap();
    let mut buffer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn a_declared_oversize_body_gets_413_before_it_is_sent() {
    let app = spawn_app_with(Options { max_body: 1024, ..receiver_only() }).await;
    // Headers announce 2 MiB; not one byte of the body follows. An answer proves nothing was buffered.
    let head = format!(
        "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 << 20
    );
    let status = raw_exchange(&app, &head, b"").await.expect("answered without the body");
    assert!(status.contains("413"), "{status}");
}

#[tokio::test]
async fn a_streamed_oversize_body_gets_413_without_waiting_for_its_end() {
    let app = spawn_app_with(Options { max_body: 1024, ..receiver_only() }).await;
    // Chunked: no length up front. 2 KiB of chunks, and the body never ends.
    let head = "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
    let status = raw_exchange(&app, head, format!("{chunk}{chunk}").as_bytes()).await.expect("answered mid-body");
    assert!(status.contains("413"), "{status}");
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_gets_408() {
    let app = spawn_app_with(Options { request_timeout: Duration::from_millis(300), ..receiver_only() }).await;
    let head = "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: 100\r\n\r\n";
    let status = raw_exchange(&app, head, b"{\"type\"").await.expect("answered");
    assert!(status.contains("408"), "{status}");
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_shed_with_503() {
    let app = spawn_app_with(Options { max_in_flight: 1, ..receiver_only() }).await;
    // One request holds the only slot by sending its body slowly.
    let mut holder = tokio::net::TcpStream::connect(app.address).await.unwrap();
    holder.write_all(b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: 100\r\n\r\n{").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.post_signed(&completed("CA0007")).await;
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "5");
            break;
        }
        // The holder's request may not have reached the handler yet.
        assert!(tokio::time::Instant::now() < deadline, "never shed: {}", response.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(holder);
}

#[tokio::test]
async fn with_the_broker_down_requests_get_503_with_retry_after_inside_the_deadline() {
    let options = Options {
        amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        ack_deadline: Duration::from_millis(500),
        ..receiver_only()
    };
    let app = spawn_app_with(options).await;
    let started = std::time::Instant::now();
    let response = app.post_signed(&completed("CA0008")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(started.elapsed() < Duration::from_secs(3), "answered within the deadline, not after a hang");
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn an_event_no_queue_is_bound_for_gets_503_not_204() {
    let app = spawn_app_with(receiver_only()).await;
    // Take the binding away under the relay: the broker returns the mandatory publish.
    let channel = app.broker.channel().await;
    channel
        .queue_unbind(
            app.broker.topology.enrich_queue.as_str().into(),
            app.broker.topology.events_exchange.as_str().into(),
            "conversation.completed".into(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let response = app.post_signed(&completed("CA0009")).await;
    assert_eq!(response.status(), 503);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"result="returned""#), "{metrics}");
}

#[tokio::test]
async fn other_paths_get_404_and_other_methods_405() {
    let app = spawn_app_with(receiver_only()).await;
    assert_eq!(app.get("/nope").await.status(), 404);
    assert_eq!(app.get("/polyai-events").await.status(), 405);
    let put = app.http.put(app.url("/polyai-events")).body("{}").send().await.unwrap();
    assert_eq!(put.status(), 405);
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(app.post_signed(&completed("CA0010")).await.status(), 204);
    let metrics = app.get("/metrics").await;
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    for name in ["relay_webhook_requests_total", "relay_ack_duration_seconds_bucket", "relay_publish_confirms_total"] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // The backlog of this relay's own queue is read from the broker.
    let backlog = format!(r#"relay_queue_backlog{{queue="{}"}}"#, app.broker.topology.enrich_queue);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !app.get("/metrics").await.text().await.unwrap().contains(&backlog) {
        assert!(tokio::time::Instant::now() < deadline, "{backlog} never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A RabbitMQ policy for the length of a test (the way an operator would set a limit).
struct Policy(String);

impl Policy {
    async fn set(queue: &str, definition: &str) -> Self {
        let pattern = format!("^{}$", regex_escape(queue));
        let status = tokio::process::Command::new("rabbitmqctl")
            .args(["set_policy", "--apply-to", "queues", queue, &pattern, definition])
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        Self(queue.to_owned())
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["clear_policy", &self.0]).output();
    }
}

fn regex_escape(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}

#[tokio::test]
async fn a_publish_the_broker_nacks_gets_503() {
    let app = spawn_app_with(receiver_only()).await;
    // A full queue with reject-publish overflow makes the broker nack new messages.
    let _policy = Policy::set(&app.broker.topology.enrich_queue, r#"{"max-length":0}"#).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = app.post_signed(&completed("CA0011")).await;
        if response.status() == 503 {
            break;
        }
        // Policies reach the queue a moment after rabbitmqctl returns.
        assert!(tokio::time::Instant::now() < deadline, "never nacked: {}", response.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"result="nack""#), "{metrics}");
}
