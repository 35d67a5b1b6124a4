//! `/v1/webhook-endpoints` (the reference) and the quickstart's `POST /v1/webhooks/endpoints`.

use std::sync::Arc;

use axum::{
    extract::{Path, RawQuery},
    http::StatusCode,
    routing::{get, post},
    Extension, Json, Router,
};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};

use super::{
    endpoints::{check_event_types, CreateEndpoint, UpdateEndpoint, EVENT_TYPES},
    error::Failure,
    list_query::{pairs, parse_bool},
    state::{Account, MockState},
};

pub fn router() -> Router<Arc<MockState>> {
    Router::new()
        .route("/v1/webhook-endpoints", get(list).post(create))
        .route("/v1/webhook-endpoints/{id}", get(show).patch(update).delete(delete))
        .route("/v1/webhook-endpoints/{id}/rotate-secret", post(rotate))
        .route("/v1/webhooks/endpoints", post(create_quickstart))
}

/// JSON bodies parsed here rather than by axum's `Json`, so every refusal is PolyAI's envelope.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::Schema(e.to_string()))
}

async fn list(Extension(account): Extension<Account>, RawQuery(raw): RawQuery) -> Result<Json<Value>, Failure> {
    let (mut enabled, mut event_type) = (None, None);
    for (key, value) in pairs(raw.as_deref()) {
        match key.as_str() {
            "enabled" => enabled = Some(parse_bool("enabled", &value).map_err(Failure::Schema)?),
            "event_type" if EVENT_TYPES.contains(&value.as_str()) => event_type = Some(value),
            "event_type" => return Err(Failure::Schema(format!("unknown event type `{value}`"))),
            _ => {}
        }
    }
    // No pagination: an account holds ten endpoints at most.
    Ok(Json(json!({"data": account.endpoints().list(enabled, event_type.as_deref())})))
}

async fn create(Extension(account): Extension<Account>, body: Bytes) -> Result<(StatusCode, Json<Value>), Failure> {
    let (endpoint, secret) = account.endpoints().create(parse(&body)?)?;
    tracing::debug!(id = endpoint.id, account = account.id, "webhook endpoint created");
    let mut body = json!(endpoint);
    body["signing_secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn show(Extension(account): Extension<Account>, Path(id): Path<String>) -> Result<Json<Value>, Failure> {
    Ok(Json(json!(account.endpoints().get(&id)?)))
}

async fn update(
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let request: UpdateEndpoint = parse(&body)?;
    Ok(Json(json!(account.endpoints().update(&id, request)?)))
}

async fn delete(Extension(account): Extension<Account>, Path(id): Path<String>) -> Result<StatusCode, Failure> {
    account.endpoints().delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(Extension(account): Extension<Account>, Path(id): Path<String>) -> Result<Json<Value>, Failure> {
    Ok(Json(json!({"signing_secret": account.endpoints().rotate(&id)?})))
}

/// The quickstart's body: `description` and `events` where the reference says `name` and `event_types`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickstartEndpoint {
    url: String,
    #[serde(default)]
    description: String,
    events: Vec<String>,
}

async fn create_quickstart(
    Extension(account): Extension<Account>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Failure> {
    let request: QuickstartEndpoint = parse(&body)?;
    check_event_types(&request.events)?;
    let name = if request.description.is_empty() { request.url.clone() } else { request.description.clone() };
    let create = CreateEndpoint {
        name,
        url: request.url,
        event_types: request.events,
        headers: Default::default(),
        timeout_ms: None,
        enabled: None,
    };
    let (endpoint, secret) = account.endpoints().create(create)?;
    let body = json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "description": request.description,
        "events": endpoint.event_types,
        "enabled": endpoint.enabled,
        "created_at": endpoint.created_at,
        "signing_secret": secret,
    });
    Ok((StatusCode::CREATED, Json(body)))
}
