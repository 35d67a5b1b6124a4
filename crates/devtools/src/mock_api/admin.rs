//! `/_mock/tenants`: the control handle over HTTP, so a demo or a test driving the `mock-api`
//! process can revoke a project's key or start a 429 storm on it. Not PolyAI's API: no key is
//! asked for, as the mock is for local use; nothing here shows a key.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post, put},
    Json, Router,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    config::Faults,
    control::{ControlError, MockControl, TenantStatus},
    error::Failure,
    state::MockState,
};

pub fn router() -> Router<Arc<MockState>> {
    Router::new()
        .route("/_mock/tenants", get(list))
        .route("/_mock/tenants/{name}", get(show))
        .route("/_mock/tenants/{name}/revoke", post(revoke))
        .route("/_mock/tenants/{name}/restore", post(restore))
        .route("/_mock/tenants/{name}/faults", put(set_faults))
}

/// [`Faults`] in plain JSON numbers, field for field (durations in the unit their name says);
/// a field left out is no fault of that kind.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    #[serde(default)]
    latency_ms: u64,
    #[serde(default)]
    rate_429: f64,
    #[serde(default = "one")]
    retry_after_s: u64,
    #[serde(default)]
    rate_5xx: f64,
    #[serde(default)]
    not_found_until: u32,
}

fn one() -> u64 {
    1
}

impl From<FaultsBody> for Faults {
    fn from(body: FaultsBody) -> Self {
        Self {
            latency: Duration::from_millis(body.latency_ms),
            rate_429: body.rate_429,
            retry_after: Duration::from_secs(body.retry_after_s),
            rate_5xx: body.rate_5xx,
            not_found_until: body.not_found_until,
        }
    }
}

impl From<&Faults> for FaultsBody {
    fn from(faults: &Faults) -> Self {
        Self {
            latency_ms: faults.latency.as_millis() as u64,
            rate_429: faults.rate_429,
            retry_after_s: faults.retry_after.as_secs() + u64::from(faults.retry_after.subsec_nanos() > 0),
            rate_5xx: faults.rate_5xx,
            not_found_until: faults.not_found_until,
        }
    }
}

fn control(state: Arc<MockState>) -> MockControl {
    MockControl::new(state)
}

fn view(status: &TenantStatus) -> Value {
    json!({
        "name": status.name,
        "account_id": status.account_id,
        "project_id": status.project_id,
        "revoked": status.revoked,
        "faults": FaultsBody::from(&status.faults),
    })
}

impl From<ControlError> for Failure {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::UnknownTenant(name) => Failure::TenantNotFound(name),
            other @ ControlError::NotAFraction(_) => Failure::Schema(other.to_string()),
        }
    }
}

async fn list(State(state): State<Arc<MockState>>) -> Json<Value> {
    let tenants: Vec<Value> = control(state).tenants().iter().map(view).collect();
    Json(json!({"tenants": tenants}))
}

async fn show(State(state): State<Arc<MockState>>, Path(name): Path<String>) -> Result<Json<Value>, Failure> {
    Ok(Json(view(&control(state).status(&name)?)))
}

async fn revoke(State(state): State<Arc<MockState>>, Path(name): Path<String>) -> Result<StatusCode, Failure> {
    control(state).revoke(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restore(State(state): State<Arc<MockState>>, Path(name): Path<String>) -> Result<StatusCode, Failure> {
    control(state).restore(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_faults(
    State(state): State<Arc<MockState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let faults: FaultsBody = serde_json::from_slice(&body).map_err(|e| Failure::Schema(e.to_string()))?;
    let control = control(state);
    control.set_faults(&name, faults.into())?;
    Ok(Json(view(&control.status(&name)?)))
}
