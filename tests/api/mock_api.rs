//! The mock of PolyAI's APIs (`polyai-relay mock-api`), started in process on port 0 and
//! exercised over real HTTP.

mod audio;
mod auth;
mod command;
mod conversations;
mod emit;
mod faults;
mod tenant_control;
mod tenants;
mod webhook_endpoints;

use polyai_relay_devtools::mock_api::{MockApi, MockConfig, RunningMock, DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID};
use reqwest::{Response, StatusCode};

use crate::helpers::http;
use secrecy::SecretString;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "test-mock-key-41c2";

/// A fixed window end, so every run of the suite sees the same conversations.
pub fn window_end() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap()
}

/// The test defaults: a known key and a fixed window.
pub fn config() -> MockConfig {
    MockConfig { api_key: SecretString::from(KEY), window_end: Some(window_end()), ..MockConfig::default() }
}

pub struct TestMock {
    pub running: RunningMock,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

pub async fn spawn_mock() -> TestMock {
    spawn_mock_with(config()).await
}

pub async fn spawn_mock_with(config: MockConfig) -> TestMock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shutdown = CancellationToken::new();
    let running = MockApi::start(config, listener, shutdown.clone()).await.expect("mock starts");
    TestMock { running, http: http(), shutdown }
}

impl TestMock {
    /// The relay's own API client, pointed at this mock with its key.
    pub fn relay_client(&self) -> polyai_relay::polyai::PolyaiClient {
        self.relay_client_for(KEY, DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID)
    }

    /// The relay's own API client for one project, with `key`.
    pub fn relay_client_for(&self, key: &str, account: &str, project: &str) -> polyai_relay::polyai::PolyaiClient {
        polyai_relay::polyai::PolyaiClient::new(&polyai_relay::config::ApiSettings::new(
            self.running.base_url().parse().unwrap(),
            SecretString::from(key),
            account,
            project,
        ))
        .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.running.base_url(), path)
    }

    /// `/v3/{account}/{project}/conversations{rest}`.
    pub fn v3(&self, rest: &str) -> String {
        self.url(&format!("/v3/{DEFAULT_ACCOUNT_ID}/{DEFAULT_PROJECT_ID}/conversations{rest}"))
    }

    /// `/v1/agents/{project}/conversations{rest}`.
    pub fn agents(&self, rest: &str) -> String {
        self.url(&format!("/v1/agents/{DEFAULT_PROJECT_ID}/conversations{rest}"))
    }

    /// GET with the right key.
    pub async fn get(&self, url: &str) -> Response {
        self.get_with(url, KEY).await
    }

    /// GET with `key`.
    pub async fn get_with(&self, url: &str, key: &str) -> Response {
        self.http.get(url).header("x-api-key", key).send().await.expect("the mock answers")
    }

    /// `/v3/.../conversations` with `query`, encoded.
    pub fn list_url(&self, query: &[(&str, &str)]) -> String {
        url::Url::parse_with_params(&self.v3(""), query).expect("a URL").into()
    }

    /// One list page, which must be a 200.
    pub async fn list(&self, query: &[(&str, &str)]) -> Value {
        let response = self.get(&self.list_url(query)).await;
        assert_eq!(response.status(), 200, "list {query:?}");
        response.json().await.expect("a JSON page")
    }

    /// Follows `cursor` from the first page to the last; returns the ids in order and the page count.
    pub async fn list_all(&self, query: &[(&str, &str)]) -> (Vec<String>, usize) {
        let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let mut q = query.to_vec();
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let page = self.list(&q).await;
            pages += 1;
            ids.extend(ids_of(&page));
            match page["cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return (ids, pages),
            }
            assert!(pages < 1000, "the cursor never ran out");
        }
    }
}

impl Drop for TestMock {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn ids_of(page: &Value) -> Vec<String> {
    page["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts PolyAI's error envelope with `code`, its `error_id` echoed in the correlation header.
pub async fn assert_envelope(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), StatusCode::from_u16(status).unwrap(), "for {code}");
    let correlation = response.headers().get("x-polyai-correlation-id").expect("a correlation id").to_str().unwrap();
    let correlation = correlation.to_owned();
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["success"], false);
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(body["error_message"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["error_id"], correlation.as_str());
    assert!(uuid::Uuid::parse_str(&correlation).is_ok(), "error_id is a uuid: {correlation}");
    body
}
