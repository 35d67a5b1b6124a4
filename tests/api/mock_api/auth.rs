//! `x-api-key` on every API route, and the correlation id on every answer.

use polyai_relay_devtools::mock_api::MockConfig;
use secrecy::SecretString;

use super::{assert_envelope, config, spawn_mock, spawn_mock_with, KEY};

#[tokio::test]
async fn a_missing_or_wrong_key_gets_401_with_a_correlation_id() {
    let mock = spawn_mock().await;
    let id = mock.running.conversations()[0].id.clone();
    let urls = [
        mock.v3(""),
        mock.v3(&format!("/{id}")),
        mock.v3(&format!("/{id}/audio")),
        mock.agents(&format!("/{id}")),
        mock.url("/v1/webhook-endpoints"),
    ];
    for url in &urls {
        let missing = mock.http.get(url).send().await.unwrap();
        assert_envelope(missing, 401, "AUTH_USER_UNAUTHORISED").await;
        let wrong = mock.http.get(url).header("x-api-key", "not-the-key").send().await.unwrap();
        assert_envelope(wrong, 401, "AUTH_USER_UNAUTHORISED").await;
        let prefix = mock.http.get(url).header("x-api-key", &KEY[..KEY.len() - 1]).send().await.unwrap();
        assert_envelope(prefix, 401, "AUTH_USER_UNAUTHORISED").await;
    }
}

#[tokio::test]
async fn a_separate_platform_key_guards_the_v1_routes() {
    let platform = "platform-key-77";
    let mock = spawn_mock_with(MockConfig { platform_api_key: Some(SecretString::from(platform)), ..config() }).await;
    let id = mock.running.conversations()[0].id.clone();
    let endpoints = mock.url("/v1/webhook-endpoints");
    assert_envelope(mock.get(&endpoints).await, 401, "AUTH_USER_UNAUTHORISED").await;
    let with_platform = mock.http.get(&endpoints).header("x-api-key", platform).send().await.unwrap();
    assert_eq!(with_platform.status(), 200);
    let agents = mock.http.get(mock.agents(&format!("/{id}"))).header("x-api-key", platform).send().await.unwrap();
    assert_eq!(agents.status(), 200);
    let v3 = mock.http.get(mock.v3("")).header("x-api-key", platform).send().await.unwrap();
    assert_envelope(v3, 401, "AUTH_USER_UNAUTHORISED").await;
}

#[tokio::test]
async fn every_answer_carries_a_correlation_id_and_unknown_routes_are_enveloped() {
    let mock = spawn_mock().await;
    let ok = mock.get(&mock.v3("?limit=1")).await;
    assert_eq!(ok.status(), 200);
    let id = ok.headers()["x-polyai-correlation-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(mock.http.get(mock.url("/healthz")).send().await.unwrap().status(), 200);
    assert_envelope(mock.get(&mock.url("/v2/nothing")).await, 404, "NOT_FOUND").await;
    let wrong_method = mock.http.delete(mock.v3("")).header("x-api-key", KEY).send().await.unwrap();
    assert_envelope(wrong_method, 405, "METHOD_NOT_ALLOWED").await;
}
