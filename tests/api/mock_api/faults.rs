//! Fault injection: latency, 429 with Retry-After, 503, and 404 until "ingested".

use std::time::{Duration, Instant};

use polyai_relay::polyai::ApiError;
use polyai_relay_devtools::mock_api::{Faults, MockConfig};

use super::{assert_envelope, config, spawn_mock_with};

fn with_faults(faults: Faults) -> MockConfig {
    MockConfig { faults, ..config() }
}

#[tokio::test]
async fn latency_delays_every_answer_by_at_least_the_configured_amount() {
    let latency = Duration::from_millis(150);
    let mock = spawn_mock_with(with_faults(Faults { latency, ..Faults::default() })).await;
    let id = mock.running.conversations()[0].id.clone();
    for url in [mock.v3(&format!("/{id}")), mock.v3(""), mock.url("/v1/webhook-endpoints")] {
        let started = Instant::now();
        assert_eq!(mock.get(&url).await.status(), 200);
        assert!(started.elapsed() >= latency, "{url} answered in {:?}", started.elapsed());
    }
    let started = Instant::now();
    assert_eq!(mock.http.get(mock.v3("")).send().await.unwrap().status(), 401);
    assert!(started.elapsed() >= latency, "errors are late too");
}

#[tokio::test]
async fn a_429_rate_of_one_answers_every_conversation_request_with_retry_after() {
    let faults = Faults { rate_429: 1.0, retry_after: Duration::from_secs(3), ..Faults::default() };
    let mock = spawn_mock_with(with_faults(faults)).await;
    let id = mock.running.conversations()[0].id.clone();
    for url in
        [mock.v3(""), mock.v3(&format!("/{id}")), mock.v3(&format!("/{id}/audio")), mock.agents(&format!("/{id}"))]
    {
        let response = mock.get(&url).await;
        assert_eq!(response.headers()["retry-after"], "3", "{url}");
        assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED").await;
    }
    assert_eq!(mock.get(&mock.url("/v1/webhook-endpoints")).await.status(), 200, "endpoints are not throttled");
    // A refused key is reported as such, not hidden behind the injected 429.
    assert_envelope(mock.http.get(mock.v3("")).send().await.unwrap(), 401, "AUTH_USER_UNAUTHORISED").await;

    // The relay's client reads the mock's 429 the way the worker needs.
    let client = mock.relay_client();
    assert_eq!(
        client.conversation(&id).await,
        Err(ApiError::RateLimited { retry_after: Some(Duration::from_secs(3)) })
    );
}

#[tokio::test]
async fn a_5xx_rate_of_one_answers_every_conversation_request_503() {
    let mock = spawn_mock_with(with_faults(Faults { rate_5xx: 1.0, ..Faults::default() })).await;
    let id = mock.running.conversations()[0].id.clone();
    for url in [mock.v3(""), mock.v3(&format!("/{id}")), mock.agents(&format!("/{id}/audio"))] {
        assert_envelope(mock.get(&url).await, 503, "SERVICE_UNAVAILABLE").await;
    }
}

#[tokio::test]
async fn rates_of_zero_inject_nothing() {
    let mock = spawn_mock_with(with_faults(Faults { rate_429: 0.0, rate_5xx: 0.0, ..Faults::default() })).await;
    for _ in 0..20 {
        assert_eq!(mock.get(&mock.v3("?limit=1")).await.status(), 200);
    }
}

#[tokio::test]
async fn not_found_until_answers_404_to_the_first_n_fetches_of_each_conversation() {
    let mock = spawn_mock_with(with_faults(Faults { not_found_until: 2, ..Faults::default() })).await;
    let calls: Vec<String> =
        mock.running.conversations().iter().filter(|c| c.has_recording()).take(2).map(|c| c.id.clone()).collect();
    let (first, second) = (&calls[0], &calls[1]);
    for _ in 0..2 {
        assert_envelope(mock.get(&mock.v3(&format!("/{first}"))).await, 404, "CONVERSATIONS_NOT_FOUND").await;
    }
    assert_eq!(mock.get(&mock.v3(&format!("/{first}"))).await.status(), 200, "ingested after two fetches");
    assert_eq!(mock.get(&mock.v3(&format!("/{first}/audio"))).await.status(), 200);

    // Each conversation counts on its own; the detail, agents and audio routes share the count.
    assert_envelope(mock.get(&mock.agents(&format!("/{second}"))).await, 404, "CONVERSATIONS_NOT_FOUND").await;
    let audio = mock.get(&mock.v3(&format!("/{second}/audio"))).await;
    assert_envelope(audio, 404, "CONVERSATIONS_RECORDING_NOT_FOUND").await;
    assert_eq!(mock.get(&mock.v3(&format!("/{second}"))).await.status(), 200);
    // The list is not a by-id request: it shows everything from the start.
    assert_eq!(mock.get(&mock.v3("")).await.status(), 200);
}
