//! Every status code of design §3, through the real router, on both backends.

use std::time::Duration;

use polyai_relay::{config::EventTypes, signature::sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    backend::{both_backends, Backend},
    helpers::{completed, now, spawn_app_with, Options, TestApp, PREVIOUS_SECRET, SECRET},
};

fn receiver_only(backend: Backend) -> Options {
    Options { backend, worker: false, ..Options::default() }
}

/// Sends raw bytes and returns the status line, or `None` when the server answered nothing in time.
async fn raw_exchange(app: &TestApp, head: &str, body_part: &[u8]) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body_part).await;
    let mut buffer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
    text.lines().next().map(str::to_owned)
}

both_backends! {
    async fn a_signed_event_is_answered_204_and_enqueued(backend: Backend) {
        let app = spawn_app_with(receiver_only(backend)).await;
        assert_eq!(app.post_signed(&completed("CA0001")).await.status(), 204);
        let body = completed("CA0002");
        let signature = sign(SECRET.as_bytes(), None, body.as_bytes());
        assert_eq!(app.post(&body, &[("x-polyai-signature", &signature)]).await.status(), 204, "body scheme");
        assert_eq!(app.queue.pending().await, 2, "queued before the 204");
    }

    async fn the_previous_secret_is_still_accepted(backend: Backend) {
        let app = spawn_app_with(receiver_only(backend)).await;
        let body = completed("CA0003");
        let ts = now().to_string();
        let signature = sign(PREVIOUS_SECRET.as_bytes(), Some(&ts), body.as_bytes());
        let response = app.post(&body, &[("x-polyai-timestamp", &ts), ("x-polyai-signature", &signature)]).await;
        assert_eq!(response.status(), 204);
        assert_eq!(app.queue.pending().await, 1, "queued before the 204");
    }

    async fn each_accepted_webhook_is_counted_once_in_every_series_by_the_signature_that_matched(backend: Backend) {
        let app = spawn_app_with(receiver_only(backend)).await;
        // A different number of webhooks for each scheme and secret, so a count landing in
        // another's series shows; the first of each registers the series, the others reuse it.
        let cells = [(true, SECRET, 1), (true, PREVIOUS_SECRET, 2), (false, SECRET, 3), (false, PREVIOUS_SECRET, 4)];
        let mut sent = 0;
        for (timestamped, secret, count) in cells {
            for _ in 0..count {
                sent += 1;
                let body = completed(&format!("CA09{sent:02}"));
                let ts = now().to_string();
                let signature = sign(secret.as_bytes(), timestamped.then_some(ts.as_str()), body.as_bytes());
                let response = app.post(&body, &[("x-polyai-timestamp", &ts), ("x-polyai-signature", &signature)]).await;
                assert_eq!(response.status(), 204, "webhook {sent}");
            }
        }
        for (scheme, secret, count) in
            [("timestamped", "current", 1.0), ("timestamped", "previous", 2.0), ("body", "current", 3.0), ("body", "previous", 4.0)]
        {
            let series = format!(r#"relay_signature_verified_total{{scheme="{scheme}",secret="{secret}"}}"#);
            assert_eq!(app.metric(&series).await, count, "{series}");
        }
        assert_eq!(app.metric(r#"relay_webhook_requests_total{outcome="accepted"}"#).await, 10.0);
        assert_eq!(app.metric(r#"relay_publish_confirms_total{destination="events",result="ack"}"#).await, 10.0);
        assert_eq!(app.metric("relay_ack_duration_seconds_count").await, 10.0);
        assert_eq!(app.metric("relay_webhook_bodies_reading").await, 0.0, "every body read is counted out");
        assert_eq!(app.queue.pending().await, 10);
    }

    async fn unsigned_badly_signed_and_stale_requests_get_401_and_enqueue_nothing(backend: Backend) {
        let app = spawn_app_with(receiver_only(backend)).await;
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

        assert_eq!(app.metric(r#"relay_signature_failures_total{reason="stale_timestamp"}"#).await, 1.0);
        assert_eq!(app.metric(r#"relay_signature_failures_total{reason="mismatch"}"#).await, 2.0);
        assert_eq!(app.metric(r#"relay_webhook_requests_total{outcome="unauthorized"}"#).await, 5.0);
        assert_eq!(app.queue.pending().await, 0);
    }

    async fn a_verified_body_that_is_not_an_event_gets_400(backend: Backend) {
        let app = spawn_app_with(receiver_only(backend)).await;
        for body in ["[1,2]", "{}", r#"{"data":{"conversation_id":"CA1"}}"#, "not json"] {
            assert_eq!(app.post_signed(body).await.status(), 400, "{body}");
        }
        assert_eq!(app.queue.pending().await, 0);
    }

    async fn types_not_forwarded_and_filtered_environments_are_acknowledged_and_dropped(backend: Backend) {
        let options = Options { environments: Some(vec!["live".into()]), ..receiver_only(backend) };
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
        assert_eq!(app.queue.pending().await, 1, "queued before the 204");
    }

    async fn every_type_is_forwarded_with_a_star(backend: Backend) {
        let app = spawn_app_with(Options { event_types: EventTypes::All, ..receiver_only(backend) }).await;
        let alert = r#"{"event_type":"alerts.triggered","alert":{"id":"ar_1"}}"#;
        let response = app.post_signed(alert).await;
        assert_eq!(response.status(), 204);
        assert!(response.headers().get("x-relay-outcome").is_none());
        assert_eq!(app.queue.pending().await, 1, "queued before the 204");
    }

    async fn a_declared_oversize_body_gets_413_before_it_is_sent(backend: Backend) {
        let app = spawn_app_with(Options { max_body: 1024, ..receiver_only(backend) }).await;
        // Headers announce 2 MiB; not one byte of the body follows. An answer proves nothing was buffered.
        let head = format!(
            "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            2 << 20
        );
        let status = raw_exchange(&app, &head, b"").await.expect("answered without the body");
        assert!(status.contains("413"), "{status}");
    }

    async fn a_streamed_oversize_body_gets_413_without_waiting_for_its_end(backend: Backend) {
        let app = spawn_app_with(Options { max_body: 1024, ..receiver_only(backend) }).await;
        // Chunked: no length up front. 2 KiB of chunks, and the body never ends.
        let head = "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
        let status = raw_exchange(&app, head, format!("{chunk}{chunk}").as_bytes()).await.expect("answered mid-body");
        assert!(status.contains("413"), "{status}");
    }

    async fn a_body_that_arrives_too_slowly_gets_408(backend: Backend) {
        let options = Options { request_timeout: Duration::from_millis(300), ..receiver_only(backend) };
        let app = spawn_app_with(options).await;
        let head = "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: 100\r\n\r\n";
        let status = raw_exchange(&app, head, b"{\"type\"").await.expect("answered");
        assert!(status.contains("408"), "{status}");
    }

    async fn oversized_headers_are_refused_with_431(backend: Backend) {
        let app = spawn_app_with(receiver_only(backend)).await;
        let many: String = (0..150).map(|i| format!("x-filler-{i}: x\r\n")).collect();
        let head = format!("POST /polyai-events HTTP/1.1\r\nhost: relay\r\n{many}content-length: 2\r\n\r\n");
        let status = raw_exchange(&app, &head, b"{}").await.expect("answered");
        assert!(status.contains("431"), "too many headers: {status}");
        let huge = format!("POST /polyai-events HTTP/1.1\r\nhost: relay\r\nx-huge: {}\r\n\r\n", "x".repeat(512 * 1024));
        let status = raw_exchange(&app, &huge, b"").await.expect("answered");
        assert!(status.contains("431"), "one huge header: {status}");
    }

    async fn other_paths_get_404_and_other_methods_405(backend: Backend) {
        let app = spawn_app_with(receiver_only(backend)).await;
        assert_eq!(app.get("/nope").await.status(), 404);
        assert_eq!(app.get("/polyai-events").await.status(), 405);
        let put = app.http.put(app.url("/polyai-events")).body("{}").send().await.unwrap();
        assert_eq!(put.status(), 405);
        // The operational endpoints live on the admin listener only (design §10).
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(app.get(path).await.status(), 404, "{path} on the webhook listener");
        }
    }

    async fn health_readiness_and_metrics_answer(backend: Backend) {
        let app = spawn_app_with(Options { backend, ..Options::default() }).await;
        assert_eq!(app.admin_get("/healthz").await.status(), 200);
        assert_eq!(app.admin_get("/readyz").await.status(), 200);
        assert_eq!(app.post_signed(&completed("CA0010")).await.status(), 204);
        let metrics = app.admin_get("/metrics").await;
        assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = metrics.text().await.unwrap();
        assert!(text.contains("relay_ack_duration_seconds_bucket"), "{text}");
        assert_eq!(app.metric(r#"relay_webhook_requests_total{outcome="accepted"}"#).await, 1.0);
        assert_eq!(app.metric(r#"relay_publish_confirms_total{destination="events",result="ack"}"#).await, 1.0);
        assert_eq!(app.metric("relay_ready").await, 1.0);
    }
}
