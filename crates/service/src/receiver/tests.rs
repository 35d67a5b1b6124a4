//! The router against stand-in publishers, for the failures a real broker cannot be made to
//! produce on demand (a confirm that never comes).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::{body::Body, http::Request};
use secrecy::SecretString;
use tower::ServiceExt;

use super::*;
use crate::{
    config::EventTypes,
    queue::{Confirms, Destination, Message, Metered, PublishError},
    signature::{sign, SignatureScheme},
    telemetry::Metrics,
};

/// A broker that takes the message and never confirms it.
struct NeverConfirms;

#[async_trait]
impl Publisher for NeverConfirms {
    async fn publish(&self, _: Destination, _: Message) -> Result<(), PublishError> {
        std::future::pending().await
    }
    fn is_ready(&self) -> bool {
        true
    }
}

/// A broker that refuses every message.
struct Nacks;

#[async_trait]
impl Publisher for Nacks {
    async fn publish(&self, _: Destination, _: Message) -> Result<(), PublishError> {
        Err(PublishError::Nacked)
    }
    fn is_ready(&self) -> bool {
        true
    }
}

/// A broker that refuses (or takes) every event, at once or `late`, beside a conversations log
/// (or none) that takes what is published to it.
#[derive(Default)]
struct LogBeside {
    keeps_copies: bool,
    late: Option<Duration>,
    takes_events: bool,
    withdrawn: std::sync::Mutex<Vec<Message>>,
    tried: tokio::sync::Notify,
    /// When set, a withdrawal is written only once this is notified.
    release: Option<Arc<tokio::sync::Notify>>,
}

#[async_trait]
impl Publisher for LogBeside {
    async fn publish(&self, to: Destination, message: Message) -> Result<(), PublishError> {
        if to == Destination::Withdrawn {
            if let Some(release) = &self.release {
                release.notified().await;
            }
            self.withdrawn.lock().unwrap().push(message);
            self.tried.notify_one();
            return Ok(());
        }
        if let Some(late) = self.late {
            tokio::time::sleep(late).await;
        }
        if self.takes_events {
            Ok(())
        } else {
            Err(PublishError::Nacked)
        }
    }
    fn keeps_refused_copies(&self) -> bool {
        self.keeps_copies
    }
    fn is_ready(&self) -> bool {
        true
    }
}

/// Runs the spawned tasks that are ready, on this one thread: a withdrawal spawned before the
/// answer runs before this.
async fn let_spawned_tasks_run() {
    tokio::spawn(async {}).await.unwrap();
}

#[tokio::test]
async fn an_event_the_broker_refused_is_withdrawn_from_a_log_that_may_keep_it() {
    let broker = Arc::new(LogBeside { keeps_copies: true, ..Default::default() });
    let router = router_with(broker.clone(), Duration::from_secs(3));
    let response = router.oneshot(signed_request_about("CAwithdrawn")).await.unwrap();
    assert_eq!(response.status(), 503);
    tokio::time::timeout(Duration::from_secs(10), broker.tried.notified()).await.expect("withdrawn");
    let withdrawn = broker.withdrawn.lock().unwrap().clone();
    assert_eq!(withdrawn.len(), 1);
    assert_eq!(withdrawn[0].event_type, crate::queue::ledger::WITHDRAWN_TYPE);
    assert!(std::str::from_utf8(&withdrawn[0].body).unwrap().contains("CAwithdrawn"));
    assert!(withdrawn[0].message_id.starts_with("sha256:"), "the refused event's own id: {}", withdrawn[0].message_id);

    // Without such a log there is nothing to withdraw: the refusal is all.
    let broker = Arc::new(LogBeside::default());
    let router = router_with(broker.clone(), Duration::from_secs(3));
    assert_eq!(router.oneshot(signed_request_about("CAnolog")).await.unwrap().status(), 503);
    let_spawned_tasks_run().await;
    assert!(broker.withdrawn.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_withdrawal_being_written_is_waited_for_by_the_shutdown() {
    let release = Arc::new(tokio::sync::Notify::new());
    let broker = Arc::new(LogBeside { keeps_copies: true, release: Some(release.clone()), ..Default::default() });
    let receiver = Arc::new(Receiver::new(settings(Duration::from_secs(3)), broker.clone(), Metrics::isolated()));
    let withdrawals = receiver.withdrawals();
    assert_eq!(router(receiver).oneshot(signed_request_about("CAheld")).await.unwrap().status(), 503);
    // No request is left to start another: what is being written is all there is to wait for.
    withdrawals.close();
    let waited = tokio::time::timeout(Duration::from_secs(30), withdrawals.wait()).await;
    assert!(waited.is_err(), "the withdrawal is still being written");
    release.notify_one();
    withdrawals.wait().await;
    assert_eq!(broker.withdrawn.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_publish_the_broker_answers_after_the_deadline_is_not_withdrawn() {
    // Taken late, it is the worker's: a withdrawal would leave its call to reconciliation too.
    let late = Some(Duration::from_secs(2));
    let broker = Arc::new(LogBeside { keeps_copies: true, late, takes_events: true, ..Default::default() });
    let router = router_with(broker.clone(), Duration::from_millis(750));
    assert_eq!(router.oneshot(signed_request_about("CAtaken")).await.unwrap().status(), 503);
    let_spawned_tasks_run().await;
    assert!(broker.withdrawn.lock().unwrap().is_empty());
}

fn router_with(publisher: Arc<dyn Publisher>, ack_deadline: Duration) -> Router {
    router_metered(publisher, ack_deadline, Metrics::isolated())
}

/// One project on `/polyai-events`, body-signed with `s`, forwarding `conversation.completed`.
fn settings(ack_deadline: Duration) -> ReceiverSettings {
    let mut settings = ReceiverSettings::new(SecretString::from("s"));
    let project = &mut settings.projects[0];
    project.signature.scheme = SignatureScheme::Body;
    project.forwarding.event_types = EventTypes::Only(vec!["conversation.completed".into()]);
    ReceiverSettings { ack_deadline, max_body: 1024, max_in_flight: 8, ..settings }
}

fn router_metered(publisher: Arc<dyn Publisher>, ack_deadline: Duration, metrics: Metrics) -> Router {
    router(Arc::new(Receiver::new(settings(ack_deadline), publisher, metrics)))
}

fn signed_request() -> Request<Body> {
    signed_request_about("CA1")
}

/// A signed event about `conversation`: another conversation is another delivery, not a duplicate.
fn signed_request_about(conversation: &str) -> Request<Body> {
    let body = format!(r#"{{"type":"conversation.completed","data":{{"conversation_id":"{conversation}"}}}}"#);
    Request::post("/polyai-events")
        .header("x-polyai-signature", sign(b"s", None, body.as_bytes()))
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_confirm_that_never_comes_gives_503_at_the_deadline() {
    let deadline = Duration::from_millis(750);
    let metrics = Metrics::isolated();
    let publisher = Arc::new(Metered::new(Arc::new(NeverConfirms), metrics.clone()));
    let router = router_metered(publisher, deadline, metrics.clone());
    let (started, real) = (tokio::time::Instant::now(), std::time::Instant::now());
    let response = router.oneshot(signed_request()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    // The handler counts the deadline with the real clock from its own start: what real time it
    // spent before publishing is taken off the wait the paused clock sees.
    let (paused, real) = (started.elapsed(), real.elapsed());
    assert!(paused + real >= deadline && paused < deadline * 2, "{paused:?} paused + {real:?} real");
    let text = metrics.render();
    assert!(text.contains(r#"relay_publish_confirms_total{destination="events",result="timeout"} 1"#), "{text}");
}

#[tokio::test]
async fn a_nack_gives_503() {
    let response = router_with(Arc::new(Nacks), Duration::from_secs(3)).oneshot(signed_request()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
}

fn spooling_router(publisher: Arc<dyn Publisher>, ack_deadline: Duration, spool: crate::spool::Spool) -> Router {
    let receiver = Receiver::new(settings(ack_deadline), publisher, Metrics::isolated()).with_spool(spool);
    router(Arc::new(receiver))
}

fn temp_spool(max_bytes: u64) -> (crate::spool::Spool, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("relay-receiver-spool-{}", uuid::Uuid::new_v4().simple()));
    let settings = crate::config::SpoolSettings { dir: dir.clone(), max_bytes };
    (crate::spool::Spool::open(&settings, Metrics::isolated()).unwrap(), dir)
}

#[tokio::test]
async fn a_confirm_that_never_comes_is_spooled_within_the_deadline() {
    let deadline = Duration::from_millis(750);
    let (spool, dir) = temp_spool(1 << 20);
    let router = spooling_router(Arc::new(NeverConfirms), deadline, spool.clone());
    let started = std::time::Instant::now();
    let response = router.oneshot(signed_request()).await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["x-relay-outcome"], "spooled");
    // The broker had the deadline less the spool's third; the fsync the rest.
    assert!(started.elapsed() >= deadline * 2 / 3, "gave up on the broker after {:?}", started.elapsed());
    assert!(started.elapsed() < deadline, "answered after the deadline: {:?}", started.elapsed());
    assert_eq!(spool.events(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_nack_is_spooled_and_a_full_spool_answers_503() {
    let (spool, dir) = temp_spool(300);
    let router = spooling_router(Arc::new(Nacks), Duration::from_secs(3), spool.clone());
    let response = router.clone().oneshot(signed_request()).await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["x-relay-outcome"], "spooled");

    let response = router.oneshot(signed_request_about("CA2")).await.unwrap();
    assert_eq!(response.status(), 503, "no room for a second event");
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(spool.events(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn with_events_still_spooled_a_new_webhook_goes_straight_to_the_broker() {
    let (spool, dir) = temp_spool(1 << 20);
    let waiting = Message {
        body: bytes::Bytes::from_static(b"{}"),
        message_id: "evt-spooled".into(),
        event_type: "conversation.completed".into(),
        timestamp: 0,
        headers: Default::default(),
    };
    spool.put(waiting).await.unwrap();
    let response = spooling_router(Arc::new(Confirms), Duration::from_secs(3), spool.clone())
        .oneshot(signed_request())
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.headers().get("x-relay-outcome").is_none(), "not spooled behind the others");
    assert_eq!(spool.events(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Design §3's status codes, on the router alone: no broker, no socket.
#[tokio::test]
async fn every_request_gets_the_status_code_of_design_section_3() {
    let signed = |body: &str| {
        Request::post("/polyai-events")
            .header("x-polyai-signature", sign(b"s", None, body.as_bytes()))
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let unsigned = |signature: &str| {
        Request::post("/polyai-events").header("x-polyai-signature", signature).body(Body::from("{}")).unwrap()
    };
    let cases: Vec<(&str, Request<Body>, u16, Option<&str>)> = vec![
        ("a signed event", signed_request(), 204, None),
        ("a type not forwarded", signed(r#"{"type":"handoff.created"}"#), 204, Some("ignored")),
        ("no signature", Request::post("/polyai-events").body(Body::from("{}")).unwrap(), 401, None),
        ("another secret's signature", unsigned(&sign(b"other", None, b"{}")), 401, None),
        ("a signature that is not hex", unsigned("zz"), 401, None),
        ("a signed body that is not JSON", signed("not json"), 400, None),
        ("a signed object without a type", signed(r#"{"data":{}}"#), 400, None),
        (
            "a declared body over the limit",
            Request::post("/polyai-events")
                .header("content-length", "2048")
                .body(Body::from(vec![b'x'; 2048]))
                .unwrap(),
            413,
            None,
        ),
        ("another method", Request::get("/polyai-events").body(Body::empty()).unwrap(), 405, None),
        ("another path", Request::post("/other").body(Body::from("{}")).unwrap(), 404, None),
    ];
    for (case, request, status, outcome) in cases {
        let router = router_with(Arc::new(Confirms), Duration::from_secs(3));
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{case}");
        let said = response.headers().get("x-relay-outcome").map(|v| v.to_str().unwrap());
        assert_eq!(said, outcome, "{case}");
    }
}

#[tokio::test]
async fn a_flood_of_unreadable_bodies_hides_no_signed_event_refused() {
    let lines = crate::telemetry::captured::Lines::default();
    let subscriber = tracing_subscriber::fmt().with_writer(lines.clone()).with_ansi(false).finish();
    // The test's runtime runs on this thread, and the router with it.
    let _logging = tracing::subscriber::set_default(subscriber);
    let router = router_with(Arc::new(Nacks), Duration::from_secs(3));
    // Anyone can send a body that breaks off: refused, and logged.
    let broken = futures_util::stream::iter([Err::<bytes::Bytes, _>(std::io::Error::other("reset"))]);
    let unreadable = Request::post("/polyai-events").body(Body::from_stream(broken)).unwrap();
    assert_eq!(router.clone().oneshot(unreadable).await.unwrap().status(), 400);
    // A signed event the relay cannot take: PolyAI will not send it again, so it is always said.
    let body = r#"{"data":{}}"#;
    let signed = Request::post("/polyai-events")
        .header("x-polyai-signature", sign(b"s", None, body.as_bytes()))
        .body(Body::from(body))
        .unwrap();
    assert_eq!(router.oneshot(signed).await.unwrap().status(), 400);
    let text = lines.text();
    assert!(text.contains("verified body refused"), "{text}");
}
