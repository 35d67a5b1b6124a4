//! Emitted webhooks, caught by a receiver on port 0 and checked with the relay's own verifier.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use bytes::Bytes;
use polyai_relay::signature::{SecretSlot, SignatureScheme, UnverifiedEvent, Verifier};
use polyai_relay_devtools::mock_api::{EmitConfig, EmitScheme, EmitSummary, MockConfig, Tenant};
use secrecy::SecretString;
use serde_json::Value;

use super::{
    config, spawn_mock_with,
    tenants::{ACCOUNT_B, KEY_B, PROJECT_B},
    TestMock,
};

const SECRET: &str = "whsec_emit_test_0b7e";

#[derive(Clone)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    answer: StatusCode,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.received.lock().unwrap().push((headers, body));
    receiver.answer
}

/// A webhook receiver on port 0 that records each POST and answers `answer`; returns its URL.
async fn start_receiver(answer: StatusCode) -> (String, Receiver) {
    let receiver = Receiver { received: Arc::default(), answer };
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

fn emitting(url: &str, count: Option<usize>, scheme: EmitScheme) -> MockConfig {
    let emit = EmitConfig { url: url.parse().unwrap(), rate: 500.0, count, secret: SecretString::from(SECRET), scheme };
    MockConfig { conversations: 30, emit: Some(emit), ..config() }
}

/// Waits for the emitter to finish: it resolves only after every send was answered.
async fn emitted(mock: &mut TestMock) -> EmitSummary {
    let handle = mock.running.emitted.take().expect("emitting was configured");
    tokio::time::timeout(Duration::from_secs(20), handle).await.expect("emitting finishes").expect("no panic")
}

fn verifier(scheme: SignatureScheme) -> Verifier {
    verifier_with(SECRET, scheme)
}

fn verifier_with(secret: &str, scheme: SignatureScheme) -> Verifier {
    Verifier::new(&[(SecretSlot::Current, SecretString::from(secret))], scheme, Duration::from_secs(300))
}

fn unverified(headers: &HeaderMap, body: &Bytes) -> UnverifiedEvent {
    let header = |name: &str| headers.get(name).map(|v| Bytes::copy_from_slice(v.as_bytes()));
    UnverifiedEvent {
        body: body.clone(),
        signature: header("x-polyai-signature"),
        timestamp: header("x-polyai-timestamp"),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Checks what every delivery must have, and that it signs with `scheme` and no other.
fn assert_deliveries(mock: &TestMock, received: &[(HeaderMap, Bytes)], scheme: SignatureScheme) {
    let (right, wrong) = match scheme {
        SignatureScheme::Body => (verifier(SignatureScheme::Body), verifier(SignatureScheme::Timestamped)),
        _ => (verifier(SignatureScheme::Timestamped), verifier(SignatureScheme::Body)),
    };
    let known: HashSet<&str> =
        mock.running.conversations().iter().filter(|c| !c.in_progress).map(|c| c.id.as_str()).collect();
    let mut event_ids = HashSet::new();
    for (headers, body) in received {
        assert_eq!(headers["content-type"], "application/json");
        let timestamp: i64 = headers["x-polyai-timestamp"].to_str().unwrap().parse().unwrap();
        assert!((now() - timestamp).abs() < 60);
        assert!(right.verify(unverified(headers, body), now()).is_ok(), "verifies with {scheme:?}");
        assert!(wrong.verify(unverified(headers, body), now()).is_err(), "signed with {scheme:?} only");
        assert!(event_ids.insert(headers["x-polyai-event-id"].to_str().unwrap().to_owned()), "event ids are unique");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert!(matches!(event["type"].as_str(), Some("conversation.completed" | "handoff.created")), "{event}");
        assert!(known.contains(event["data"]["conversation_id"].as_str().unwrap()), "about a finished conversation");
        for field in ["environment", "account_id", "project_id"] {
            assert!(event["data"][field].is_string(), "data.{field}");
        }
    }
}

#[tokio::test]
async fn emitted_webhooks_are_signed_timestamped_and_counted_exactly() {
    let (url, receiver) = start_receiver(StatusCode::NO_CONTENT).await;
    let mut mock = spawn_mock_with(emitting(&url, Some(7), EmitScheme::Timestamped)).await;
    let summary = emitted(&mut mock).await;
    assert_eq!((summary.sent, summary.accepted, summary.failed), (7, 7, 0));
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 7);
    assert_deliveries(&mock, &received, SignatureScheme::Timestamped);
}

#[tokio::test]
async fn emitted_webhooks_can_sign_the_body_alone() {
    let (url, receiver) = start_receiver(StatusCode::NO_CONTENT).await;
    let mut mock = spawn_mock_with(emitting(&url, Some(5), EmitScheme::Body)).await;
    assert_eq!(emitted(&mut mock).await.accepted, 5);
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 5);
    assert_deliveries(&mock, &received, SignatureScheme::Body);
}

#[tokio::test]
async fn without_a_count_one_pass_covers_every_finished_conversation() {
    let (url, receiver) = start_receiver(StatusCode::NO_CONTENT).await;
    let mut mock = spawn_mock_with(emitting(&url, None, EmitScheme::Timestamped)).await;
    let summary = emitted(&mut mock).await;
    let conversations = mock.running.conversations();
    let finished: HashSet<&str> = conversations.iter().filter(|c| !c.in_progress).map(|c| c.id.as_str()).collect();
    let handoffs = conversations.iter().filter(|c| c.handoff).count();
    assert_eq!(summary.sent, finished.len() + handoffs);
    let received = receiver.received.lock().unwrap().clone();
    let completed: HashSet<String> = received
        .iter()
        .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap())
        .filter(|e| e["type"] == "conversation.completed")
        .map(|e| e["data"]["conversation_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(completed, finished.iter().map(|s| s.to_string()).collect());
}

#[tokio::test]
async fn a_refusing_receiver_is_counted_not_retried() {
    let (url, receiver) = start_receiver(StatusCode::UNAUTHORIZED).await;
    let mut mock = spawn_mock_with(emitting(&url, Some(4), EmitScheme::Timestamped)).await;
    let summary = emitted(&mut mock).await;
    assert_eq!((summary.sent, summary.accepted), (4, 0));
    assert_eq!(summary.statuses.get(&401), Some(&4));
    assert_eq!(receiver.received.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn each_tenant_emits_about_its_own_conversations_signed_with_its_own_secret() {
    const SECRET_B: &str = "whsec_tenant_b_51aa";
    let (url_a, receiver_a) = start_receiver(StatusCode::NO_CONTENT).await;
    let (url_b, receiver_b) = start_receiver(StatusCode::NO_CONTENT).await;
    let mut config = emitting(&url_a, Some(4), EmitScheme::Timestamped);
    let emit_b = EmitConfig {
        url: url_b.parse().unwrap(),
        secret: SecretString::from(SECRET_B),
        ..config.emit.clone().unwrap()
    };
    config.tenants = vec![Tenant { emit: Some(emit_b), ..Tenant::new("b", ACCOUNT_B, PROJECT_B, KEY_B) }];
    let mut mock = spawn_mock_with(config).await;
    let handle_b = mock.running.emitted_by_tenant.remove("b").expect("b emits");
    assert_eq!(emitted(&mut mock).await.accepted, 4);
    let summary_b = tokio::time::timeout(Duration::from_secs(20), handle_b).await.unwrap().unwrap();
    assert_eq!(summary_b.accepted, 4);

    assert_deliveries(&mock, &receiver_a.received.lock().unwrap().clone(), SignatureScheme::Timestamped);
    let known_b: HashSet<&str> = mock.running.conversations_of("b").unwrap().iter().map(|c| c.id.as_str()).collect();
    let received_b = receiver_b.received.lock().unwrap().clone();
    assert_eq!(received_b.len(), 4);
    for (headers, body) in &received_b {
        let own = verifier_with(SECRET_B, SignatureScheme::Timestamped).verify(unverified(headers, body), now());
        assert!(own.is_ok(), "signed with b's secret");
        let other = verifier(SignatureScheme::Timestamped).verify(unverified(headers, body), now());
        assert!(other.is_err(), "not with the other secret");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["data"]["project_id"], PROJECT_B);
        assert!(known_b.contains(event["data"]["conversation_id"].as_str().unwrap()), "one of b's conversations");
    }
}
