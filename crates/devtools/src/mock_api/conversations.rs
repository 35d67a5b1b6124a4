//! `GET /v3/{account}/{project}/conversations[/{id}]` and the agents route's camelCase detail.

use std::sync::Arc;

use axum::{
    extract::{Path, RawQuery},
    http::{header, HeaderMap},
    Extension, Json,
};
use serde_json::{json, Value};

use super::{
    cursor::Cursor,
    error::Failure,
    generate::{format_time, Conversation},
    list_query::{ListQuery, Page},
    tenant_state::TenantState,
};

/// The tenant is the path's, checked by `auth` against the key before this runs.
pub async fn list(
    Extension(tenant): Extension<Arc<TenantState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    let query = ListQuery::parse(raw.as_deref())?;
    let fingerprint = query.filters.fingerprint();
    let matching: Vec<&Conversation> = tenant.conversations.iter().filter(|c| query.filters.matches(c)).collect();
    let start = match &query.page {
        Page::First => 0,
        Page::Offset(offset) => (*offset).min(matching.len()),
        Page::After(cursor) => {
            if cursor.filters != fingerprint {
                return Err(Failure::Validation(
                    "cursor was issued for other filters; keep the filters identical between pages".into(),
                ));
            }
            // The list is sorted newest first, ties by id: everything before the cursor's position is done.
            matching.partition_point(|c| !comes_after(c, cursor))
        }
    };
    let end = (start + query.limit).min(matching.len());
    let page = &matching[start..end];
    let more = end < matching.len();
    let cursor = page.last().filter(|_| more).map(|last| Cursor {
        started_at: last.started_at.unix_timestamp(),
        id: last.id.clone(),
        filters: fingerprint,
    });
    let mut body = json!({"conversations": page, "cursor": cursor.map(|c| c.encode())});
    // `next_offset` is present only when paginating by offset (polyai-api.md §3.2).
    if matches!(query.page, Page::Offset(_)) && more {
        body["next_offset"] = json!(end);
    }
    Ok(Json(body))
}

/// True when `c` sorts after the cursor's conversation (newest first, ties by id).
fn comes_after(c: &Conversation, cursor: &Cursor) -> bool {
    let started = c.started_at.unix_timestamp();
    started < cursor.started_at || (started == cursor.started_at && c.id.as_str() > cursor.id.as_str())
}

pub async fn by_id(
    Extension(tenant): Extension<Arc<TenantState>>,
    Path((_, _, id)): Path<(String, String, String)>,
) -> Result<Json<Conversation>, Failure> {
    Ok(Json(find(&tenant, &id)?.clone()))
}

/// `GET /v1/agents/{agentId}/conversations/{id}`: the reference spec's ConversationDetailResponse.
pub async fn detail(
    Extension(tenant): Extension<Arc<TenantState>>,
    Path((agent, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, Failure> {
    let conversation = find(&tenant, &id)?;
    // Absolute, like PolyAI's: built from the Host the client used, so it works through any port.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let audio_url = host
        .filter(|_| conversation.has_recording())
        .map(|host| format!("http://{host}/v1/agents/{agent}/conversations/{id}/audio"));
    Ok(Json(camel_case(conversation, audio_url)))
}

/// A conversation of the tenant's the by-id routes may show: known, and past `--not-found-until`.
fn find<'a>(tenant: &'a TenantState, id: &str) -> Result<&'a Conversation, Failure> {
    let conversation = tenant.conversation(id).ok_or_else(|| Failure::ConversationNotFound(id.to_owned()))?;
    if tenant.not_ingested_yet(id) {
        tracing::debug!(conversation_id = id, "answering 404 until ingested");
        return Err(Failure::ConversationNotFound(id.to_owned()));
    }
    Ok(conversation)
}

fn camel_case(c: &Conversation, audio_url: Option<String>) -> Value {
    let first_request = c.turns.iter().map(|t| t.user_input.as_str()).find(|u| !u.is_empty());
    json!({
        "conversationId": c.id,
        "accountId": c.account_id,
        "projectId": c.project_id,
        "createdAt": format_time(c.started_at),
        "startedAt": format_time(c.started_at),
        "finishedAt": c.finished_at().map(format_time),
        "channel": c.channel,
        "fromNumber": c.from_number,
        "toNumber": c.to_number,
        "language": "en-GB",
        "variantId": c.variant_id,
        "clientEnv": c.environment,
        "totalDuration": c.total_duration,
        "polyaiDuration": c.polyai_duration,
        "duration": c.total_duration,
        "inProgress": c.in_progress,
        "handoff": c.handoff,
        "handoffDestination": c.handoff_destination,
        "handoffReason": c.handoff_reason,
        "direction": "inbound",
        "tags": [],
        "polyScore": if c.handoff { 3.5 } else { 4.5 },
        "shortSummary": first_request.map(|r| format!("The caller said: \"{r}\"")).unwrap_or_default(),
        "deploymentId": null,
        "note": null,
        "audioUrl": audio_url,
        "turns": c.turns,
        "metrics": c.metrics,
        "functionEvents": {},
    })
}
