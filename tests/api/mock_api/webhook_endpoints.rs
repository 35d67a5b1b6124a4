//! `/v1/webhook-endpoints` as the reference describes it, and the quickstart's registration path.

use serde_json::{json, Value};

use super::{assert_envelope, spawn_mock, TestMock, KEY};

fn endpoint(name: &str) -> Value {
    json!({"name": name, "url": "https://example.com/webhooks/polyai", "event_types": ["conversation.completed"]})
}

impl TestMock {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path)).header("x-api-key", KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the mock answers")
    }

    async fn create(&self, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, "/v1/webhook-endpoints", Some(body)).await
    }
}

#[tokio::test]
async fn an_endpoint_is_created_with_its_secret_shown_only_that_once() {
    let mock = spawn_mock().await;
    let created = mock.create(endpoint("Production")).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("whe_") && id[4..].chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    assert!(created["signing_secret"].as_str().is_some_and(|s| s.len() > 20));
    assert_eq!(created["enabled"], true);
    assert_eq!(created["timeout_ms"], 5000);
    assert_eq!(created["headers"], json!({}));
    assert!(created["created_at"].is_string() && created["updated_at"].is_string());

    let shown: Value = mock.get(&mock.url(&format!("/v1/webhook-endpoints/{id}"))).await.json().await.unwrap();
    assert_eq!(shown["id"], id);
    assert!(shown.get("signing_secret").is_none());
    let listed: Value = mock.get(&mock.url("/v1/webhook-endpoints")).await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["data"][0].get("signing_secret").is_none());
    assert_eq!(listed["data"][0], shown);
}

#[tokio::test]
async fn invalid_endpoints_are_refused_with_the_envelope() {
    let mock = spawn_mock().await;
    let http = json!({"name": "n", "url": "http://example.com/hook", "event_types": ["alerts.triggered"]});
    let mut unknown_field = endpoint("n");
    unknown_field["description"] = json!("not in the reference schema");
    let no_types = json!({"name": "n", "url": "https://example.com/hook", "event_types": []});
    let bad_type = json!({"name": "n", "url": "https://example.com/hook", "event_types": ["call.ended"]});
    let no_name = json!({"url": "https://example.com/hook", "event_types": ["alerts.triggered"]});
    let mut slow = endpoint("n");
    slow["timeout_ms"] = json!(60_000);
    for body in [http, unknown_field, no_types, bad_type, no_name, slow] {
        assert_envelope(mock.create(body.clone()).await, 400, "SCHEMA_VALIDATION_FAILED").await;
    }
    let not_json = mock.http.post(mock.url("/v1/webhook-endpoints")).header("x-api-key", KEY).body("{").send().await;
    assert_envelope(not_json.unwrap(), 400, "SCHEMA_VALIDATION_FAILED").await;
    let listed: Value = mock.get(&mock.url("/v1/webhook-endpoints")).await.json().await.unwrap();
    assert_eq!(listed["data"], json!([]), "nothing was created");

    assert_envelope(mock.get(&mock.url("/v1/webhook-endpoints/whe_missing1")).await, 404, "WEBHOOK_ENDPOINT_NOT_FOUND")
        .await;
    assert_envelope(mock.get(&mock.url("/v1/webhook-endpoints/not-an-id")).await, 422, "INVALID_ID").await;
}

#[tokio::test]
async fn the_eleventh_endpoint_is_a_conflict() {
    let mock = spawn_mock().await;
    for n in 0..10 {
        assert_eq!(mock.create(endpoint(&format!("endpoint {n}"))).await.status(), 201);
    }
    assert_envelope(mock.create(endpoint("one too many")).await, 409, "WEBHOOK_ENDPOINT_LIMIT_REACHED").await;
}

#[tokio::test]
async fn rotation_returns_a_new_secret_and_delete_answers_204() {
    let mock = spawn_mock().await;
    let created: Value = mock.create(endpoint("Rotating")).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let rotated = mock.send(reqwest::Method::POST, &format!("/v1/webhook-endpoints/{id}/rotate-secret"), None).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert!(rotated["signing_secret"].is_string());
    assert_ne!(rotated["signing_secret"], created["signing_secret"]);

    let deleted = mock.send(reqwest::Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), None).await;
    assert_eq!(deleted.status(), 204);
    let gone = mock.get(&mock.url(&format!("/v1/webhook-endpoints/{id}"))).await;
    assert_envelope(gone, 404, "WEBHOOK_ENDPOINT_NOT_FOUND").await;
}

#[tokio::test]
async fn an_update_changes_only_the_fields_sent_and_refuses_unknown_ones() {
    let mock = spawn_mock().await;
    let created: Value = mock.create(endpoint("Patched")).await.json().await.unwrap();
    let path = format!("/v1/webhook-endpoints/{}", created["id"].as_str().unwrap());
    let change = json!({"url": "https://example.com/webhooks/polyai-v2", "enabled": false});
    let updated = mock.send(reqwest::Method::PATCH, &path, Some(change)).await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["url"], "https://example.com/webhooks/polyai-v2");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["name"], "Patched");
    assert_eq!(updated["event_types"], created["event_types"]);
    assert!(updated.get("signing_secret").is_none());

    let enabled: Value = mock.get(&mock.url("/v1/webhook-endpoints?enabled=true")).await.json().await.unwrap();
    assert_eq!(enabled["data"], json!([]), "the list filters on enabled");
    let refused = mock.send(reqwest::Method::PATCH, &path, Some(json!({"events": ["alerts.triggered"]}))).await;
    assert_envelope(refused, 400, "SCHEMA_VALIDATION_FAILED").await;
    let insecure = mock.send(reqwest::Method::PATCH, &path, Some(json!({"url": "http://example.com"}))).await;
    assert_envelope(insecure, 400, "SCHEMA_VALIDATION_FAILED").await;
}

#[tokio::test]
async fn the_quickstart_path_registers_an_endpoint_too() {
    let mock = spawn_mock().await;
    let body = json!({
        "url": "https://example.com/polyai-events",
        "description": "relay",
        "events": ["conversation.completed", "handoff.created"],
    });
    let created = mock.send(reqwest::Method::POST, "/v1/webhooks/endpoints", Some(body)).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert!(created["id"].as_str().unwrap().starts_with("whe_"));
    assert!(created["signing_secret"].is_string());
    assert_eq!(created["events"], json!(["conversation.completed", "handoff.created"]));
    let listed: Value = mock.get(&mock.url("/v1/webhook-endpoints")).await.json().await.unwrap();
    assert_eq!(listed["data"][0]["id"], created["id"]);
    assert_eq!(listed["data"][0]["name"], "relay");
    let insecure = json!({"url": "http://example.com", "events": ["conversation.completed"]});
    let refused = mock.send(reqwest::Method::POST, "/v1/webhooks/endpoints", Some(insecure)).await;
    assert_envelope(refused, 400, "SCHEMA_VALIDATION_FAILED").await;
}
