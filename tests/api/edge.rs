//! The public edge (design §10) through the real server on real sockets: connection timeouts,
//! duplicate deliveries, the unsigned timestamp. Attacks that need a process of their own (file
//! descriptors, memory, logs) are in `edge_process.rs`.

use std::time::Duration;

use polyai_relay::{config::ConnectionLimits, signature::sign};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::{
    backend::{both_backends, Backend},
    helpers::{completed, header, now, spawn_app_with, Options, TestApp, SECRET},
    outage::proxied_app,
};

/// Every test here is over well within this; an old relay never closes the connection at all.
const BOUND: Duration = Duration::from_secs(10);

fn limits(header_timeout: Duration, idle_timeout: Duration) -> ConnectionLimits {
    ConnectionLimits { header_timeout, idle_timeout, ..ConnectionLimits::default() }
}

/// At most `max_connections`; heads have all the time the tests need.
fn capped(max_connections: usize) -> ConnectionLimits {
    ConnectionLimits { max_connections, header_timeout: Duration::from_secs(60), ..ConnectionLimits::default() }
}

async fn receiver_with(backend: Backend, limits: ConnectionLimits) -> TestApp {
    spawn_app_with(Options { backend, worker: false, limits, ..Options::default() }).await
}

/// A complete signed delivery about `conversation_id`, as PolyAI sends it on a kept-alive connection.
fn signed_request(conversation_id: &str) -> String {
    let body = completed(conversation_id);
    let ts = now().to_string();
    let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
    format!(
        "POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n\
         x-polyai-timestamp: {ts}\r\nx-polyai-signature: {signature}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The start of the relay's answer on `stream` (its status line and headers fit in one read).
async fn answer(stream: &mut TcpStream) -> String {
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(BOUND, stream.read(&mut buffer)).await.expect("answered").unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

/// Reads until the server closes the connection; what it sent before that.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

both_backends! {
    async fn a_silent_new_connection_is_closed_at_the_header_timeout(backend: Backend) {
        let timeout = Duration::from_millis(300);
        let app = receiver_with(backend, limits(timeout, Duration::from_secs(60))).await;
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        let started = Instant::now();
        tokio::time::timeout(BOUND, until_closed(&mut stream)).await.expect("closed by the relay");
        assert!(started.elapsed() >= timeout, "closed after {:?}", started.elapsed());
    }

    async fn trickled_headers_are_cut_at_the_header_timeout(backend: Backend) {
        let app = receiver_with(backend, limits(Duration::from_millis(500), Duration::from_secs(60))).await;
        let stream = TcpStream::connect(app.address).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        // One header byte every 50 ms: each byte is progress, none completes the head.
        let trickle = tokio::spawn(async move {
            writer.write_all(b"POST /polyai-events HTTP/1.1\r\nhost: relay\r\nx-slow: ").await?;
            loop {
                writer.write_all(b"a").await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
        let mut buffer = [0u8; 1024];
        let closed = tokio::time::timeout(BOUND, async {
            while !matches!(reader.read(&mut buffer).await, Ok(0) | Err(_)) {}
        })
        .await;
        trickle.abort();
        assert!(closed.is_ok(), "a trickled head was still open after {BOUND:?}");
    }

    async fn an_idle_keep_alive_connection_closes_at_the_idle_timeout_not_the_header_timeout(backend: Backend) {
        // Far apart, so that telling them apart needs no precise clock: the relay's idle clock
        // starts when its answer is out, and on a loaded machine this test may read the answer
        // hundreds of milliseconds later (the watchdog's unit tests time the phases exactly).
        let (header_timeout, idle_timeout) = (Duration::from_millis(200), Duration::from_secs(3));
        let app = receiver_with(backend, limits(header_timeout, idle_timeout)).await;
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream.write_all(b"GET /nope HTTP/1.1\r\nhost: relay\r\n\r\n").await.unwrap();
        assert!(answer(&mut stream).await.starts_with("HTTP/1.1 404"));
        let idle_since = Instant::now();
        tokio::time::timeout(BOUND, until_closed(&mut stream)).await.expect("an idle connection is closed");
        assert!(idle_since.elapsed() >= idle_timeout / 2, "closed after {:?}", idle_since.elapsed());
    }

    async fn at_the_connection_cap_a_signed_webhook_takes_the_place_of_the_oldest_half_open_connection(backend: Backend) {
        let app = receiver_with(backend, capped(2)).await;
        // Two connections hold both places, each with an unfinished head; the first is the older
        // (the relay accepts in the order the kernel completed the handshakes).
        let mut oldest = TcpStream::connect(app.address).await.unwrap();
        oldest.write_all(b"GET /nope HTTP/1.1\r\n").await.unwrap();
        let mut newer = TcpStream::connect(app.address).await.unwrap();
        newer.write_all(b"GET /nope HTTP/1.1\r\n").await.unwrap();

        let delivery = tokio::time::timeout(BOUND, app.post_signed(&completed("CA0cap0"))).await;
        assert_eq!(delivery.expect("answered while half-open connections hold every place").status(), 204);
        tokio::time::timeout(BOUND, until_closed(&mut oldest)).await.expect("the oldest half-open connection is closed");
        // The newer one kept its place: its head, completed, is answered.
        newer.write_all(b"host: relay\r\n\r\n").await.unwrap();
        assert!(answer(&mut newer).await.starts_with("HTTP/1.1 404"));
        assert_eq!(app.metric(r#"relay_connections_evicted_total{listener="webhooks",phase="head"}"#).await, 1.0);
    }

    async fn polyai_keep_alive_connection_is_evicted_only_after_those_that_never_carried_a_signed_request(backend: Backend) {
        let app = receiver_with(backend, capped(2)).await;
        // PolyAI's connection, kept alive after a delivery: the oldest.
        let mut polyai = TcpStream::connect(app.address).await.unwrap();
        polyai.write_all(signed_request("CA0kee0").as_bytes()).await.unwrap();
        assert!(answer(&mut polyai).await.starts_with("HTTP/1.1 204"));
        let mut attacker = TcpStream::connect(app.address).await.unwrap();
        attacker.write_all(b"GET /nope HTTP/1.1\r\n").await.unwrap();

        let delivery = tokio::time::timeout(BOUND, app.post_signed(&completed("CA0kee1"))).await;
        assert_eq!(delivery.expect("answered at the cap").status(), 204);
        tokio::time::timeout(BOUND, until_closed(&mut attacker)).await.expect("the attacker's connection is closed");
        polyai.write_all(signed_request("CA0kee2").as_bytes()).await.unwrap();
        assert!(answer(&mut polyai).await.starts_with("HTTP/1.1 204"), "PolyAI's connection was evicted");
    }
    async fn a_replayed_delivery_under_a_new_event_id_is_answered_duplicate_and_not_enqueued(backend: Backend) {
        let app = receiver_with(backend, ConnectionLimits::default()).await;
        let body = completed("CA0d0p");
        // A second ago, so that signing the same body now makes another delivery.
        let ts = (now() - 1).to_string();
        let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
        let headers = |id| [("x-polyai-timestamp", ts.as_str()), ("x-polyai-signature", signature.as_str()), ("x-polyai-event-id", id)];
        let first = app.post(&body, &headers("evt_original")).await;
        assert_eq!(first.status(), 204);
        assert!(first.headers().get("x-relay-outcome").is_none());
        let replay = app.post(&body, &headers("evt_replayed")).await;
        assert_eq!(replay.status(), 204);
        assert_eq!(replay.headers()["x-relay-outcome"], "duplicate");
        assert_eq!(app.metric(r#"relay_webhook_requests_total{outcome="duplicate"}"#).await, 1.0);
        // The same event signed anew (another timestamp) is another delivery.
        assert_eq!(app.post_signed(&body).await.status(), 204);
        assert_eq!(app.queue.pending_ids().await.len(), 2, "queued before each 204, and the duplicate not at all");
    }

    async fn under_the_body_scheme_the_same_body_is_a_duplicate_whatever_its_headers(backend: Backend) {
        let app = receiver_with(backend, ConnectionLimits::default()).await;
        let body = completed("CA0b0d");
        let signature = sign(SECRET.as_bytes(), None, body.as_bytes());
        let first = app.post(&body, &[("x-polyai-signature", &signature), ("x-polyai-event-id", "evt_a")]).await;
        assert_eq!(first.status(), 204);
        let copy = app
            .post(&body, &[("x-polyai-signature", &signature.to_uppercase()), ("x-polyai-timestamp", "1"), ("x-polyai-event-id", "evt_b")])
            .await;
        assert_eq!(copy.status(), 204);
        assert_eq!(copy.headers()["x-relay-outcome"], "duplicate");
        assert_eq!(app.queue.pending_ids().await.len(), 1, "queued before the 204, and the duplicate not at all");
    }
}

#[tokio::test]
async fn a_connection_whose_verified_request_is_in_flight_is_never_evicted() {
    // The broker goes silent: a verified delivery stays in flight (busy) until it confirms.
    let options =
        Options { worker: false, limits: capped(1), ack_deadline: Duration::from_secs(20), ..Options::default() };
    let (app, proxy) = proxied_app(options).await;
    proxy.stall();
    let mut polyai = TcpStream::connect(app.address).await.unwrap();
    polyai.write_all(signed_request("CA0bsy0").as_bytes()).await.unwrap();
    app.wait_for_metric(r#"relay_signature_verified_total{scheme="timestamped",secret="current"}"#, 1.0).await;

    // At a cap of one, a newcomer finds no connection it may take the place of: it waits.
    let mut newcomer = TcpStream::connect(app.address).await.unwrap();
    newcomer.write_all(b"GET /nope HTTP/1.1\r\nhost: relay\r\n\r\n").await.unwrap();
    // A negative, so bounded by a short wait.
    let mut buffer = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), newcomer.read(&mut buffer)).await;
    assert!(early.is_err(), "a newcomer was served while the only place was busy with a verified request");

    proxy.resume();
    assert!(answer(&mut polyai).await.starts_with("HTTP/1.1 204"), "the busy connection was cut");
    // Answered, PolyAI's connection is idle: the newcomer takes its place.
    assert!(answer(&mut newcomer).await.starts_with("HTTP/1.1 404"));
    assert_eq!(app.metric(r#"relay_connections_evicted_total{listener="webhooks",phase="idle"}"#).await, 1.0);
    assert_eq!(app.metric(r#"relay_connections_evicted_total{listener="webhooks",phase="request"}"#).await, 0.0);
}

#[tokio::test]
async fn an_unsigned_timestamp_is_not_forwarded_as_if_verified() {
    let app = receiver_with(Backend::Amqp, ConnectionLimits::default()).await;
    let body = completed("CA0ts0");
    let signature = sign(SECRET.as_bytes(), None, body.as_bytes());
    // The body scheme signs the body alone: this timestamp is anyone's.
    let response = app.post(&body, &[("x-polyai-signature", &signature), ("x-polyai-timestamp", "1234567890")]).await;
    assert_eq!(response.status(), 204);
    let delivery = app.queue.broker().next_message(&app.queue.broker().topology.enrich_queue).await;
    assert_eq!(header(&delivery, "x-relay-signature-scheme").as_deref(), Some("body"));
    assert_eq!(header(&delivery, "x-polyai-timestamp"), None);
}

/// One signed delivery as someone who captured it holds it: sent again under any event id
/// (`X-PolyAI-Event-ID` is not signed).
struct Captured {
    body: String,
    ts: String,
    signature: String,
}

impl Captured {
    fn new(conversation_id: &str) -> Self {
        let body = completed(conversation_id);
        let ts = now().to_string();
        let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
        Self { body, ts, signature }
    }

    async fn send(&self, app: &TestApp, event_id: &str) -> (u16, Option<String>) {
        let headers = [
            ("x-polyai-timestamp", self.ts.as_str()),
            ("x-polyai-signature", self.signature.as_str()),
            ("x-polyai-event-id", event_id),
        ];
        let response = app.post(&self.body, &headers).await;
        let outcome = response.headers().get("x-relay-outcome").map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), outcome)
    }
}

/// Both copies verified: each has been looked up in the table of deliveries, and the first is
/// being published to a broker that holds its confirm.
async fn both_verified(app: &TestApp) {
    app.wait_for_metric(r#"relay_signature_verified_total{scheme="timestamped",secret="current"}"#, 2.0).await;
}

#[tokio::test]
async fn copies_sent_at_once_under_new_event_ids_are_enqueued_once() {
    let (app, proxy) = proxied_app(Options { worker: false, ..Options::default() }).await;
    let captured = Captured::new("CA0rce");
    proxy.stall();
    let (a, b, ()) = tokio::join!(captured.send(&app, "evt_a"), captured.send(&app, "evt_b"), async {
        both_verified(&app).await;
        proxy.resume();
    });

    // Either may be the first: that one is stored; the other was told to come back, not `duplicate`,
    // since the first's outcome was not known yet when it was answered.
    let (stored, copy) = if a.0 == 204 { (("evt_a", a), ("evt_b", b)) } else { (("evt_b", b), ("evt_a", a)) };
    assert_eq!(stored.1, (204, None), "the first copy is enqueued");
    assert_eq!(copy.1, (503, None), "a copy of a delivery still in flight");
    assert_eq!(app.metric(r#"relay_webhook_requests_total{outcome="duplicate_in_flight"}"#).await, 1.0);
    // Retried, it finds the first stored.
    assert_eq!(captured.send(&app, copy.0).await, (204, Some("duplicate".to_owned())));
    assert_eq!(app.queue.pending_ids().await, [stored.0.to_owned()].into(), "enqueued once, under the first's id");
}

#[tokio::test]
async fn a_copy_refused_while_the_first_was_in_flight_is_stored_when_the_first_failed() {
    let (app, proxy) = proxied_app(Options { worker: false, ..Options::default() }).await;
    let captured = Captured::new("CA0fai");
    proxy.stall();
    // The broker goes away with the first copy's publish held, unconfirmed: it is not stored.
    let (a, b, ()) = tokio::join!(captured.send(&app, "evt_a"), captured.send(&app, "evt_b"), async {
        both_verified(&app).await;
        proxy.cut();
    });
    assert_eq!((a.0, b.0), (503, 503), "a copy was answered {a:?} / {b:?} though nothing was stored");

    // Back, and no longer silent.
    proxy.resume();
    proxy.restore();
    app.wait_for_readiness(200).await;
    // The failed first is forgotten: a copy sent now (PolyAI's retry, or anyone's) is stored.
    assert_eq!(captured.send(&app, "evt_b").await, (204, None));
    assert_eq!(captured.send(&app, "evt_c").await, (204, Some("duplicate".to_owned())));
    assert_eq!(app.queue.pending_ids().await, ["evt_b".to_owned()].into());
}
