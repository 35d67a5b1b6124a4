//! Recordings: the quickstart's `/v3/{account}/{project}/conversations/{id}/audio` and the
//! reference's `/v1/agents/{agentId}/conversations/{id}/audio` (polyai-api.md §3.4).

use std::sync::Arc;

use axum::{
    extract::{Path, RawQuery},
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    Extension,
};

use super::{
    error::Failure,
    list_query::{pairs, parse_bool},
    tenant_state::TenantState,
    wav::{self, Direction},
};

pub async fn v3(
    Extension(tenant): Extension<Arc<TenantState>>,
    Path((_, _, id)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    recording(&tenant, &id, raw.as_deref())
}

pub async fn agents(
    Extension(tenant): Extension<Arc<TenantState>>,
    Path((_, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    recording(&tenant, &id, raw.as_deref())
}

/// The tenant is the path's, checked by `auth` against the key before this runs.
fn recording(tenant: &TenantState, id: &str, raw: Option<&str>) -> Result<Response, Failure> {
    let (direction, redacted) = options(raw)?;
    // Chat channels never have a recording, and a call has none until it ends.
    let conversation = tenant
        .conversation(id)
        .filter(|c| c.has_recording())
        .ok_or_else(|| Failure::RecordingNotFound(id.to_owned()))?;
    if tenant.not_ingested_yet(id) {
        return Err(Failure::RecordingNotFound(id.to_owned()));
    }
    let body = wav::recording(conversation.total_duration, direction, redacted);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"))], body).into_response())
}

/// `direction=combined|user|agent` (default combined), `redacted=true|false` (default false).
fn options(raw: Option<&str>) -> Result<(Direction, bool), Failure> {
    let (mut direction, mut redacted) = (Direction::Combined, false);
    for (key, value) in pairs(raw) {
        match key.as_str() {
            "direction" => {
                direction = match value.as_str() {
                    "combined" => Direction::Combined,
                    "user" => Direction::User,
                    "agent" => Direction::Agent,
                    _ => return Err(Failure::Validation("direction must be combined, user or agent".into())),
                }
            }
            "redacted" => redacted = parse_bool("redacted", &value).map_err(Failure::Validation)?,
            _ => {}
        }
    }
    Ok((direction, redacted))
}
