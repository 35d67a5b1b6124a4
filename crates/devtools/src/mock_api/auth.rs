//! Which tenant a request is for, decided by its `x-api-key` and path (design §2, §12): a v3 key
//! opens its own project's `/v3/...` paths only, a platform key its own account's `/v1/...`
//! routes. Then the tenant's latency and injected faults; a refusal comes first, so a refused
//! key is never masked by a 429.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{error::Failure, faults, state::MockState, tenant_state::TenantState};

/// `/v3/{account}/{project}/...`: the v3 key of that very project.
pub async fn v3(
    State(state): State<Arc<MockState>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    let resolved = state.v3_tenant(api_key(&request), param("account"), param("project")).cloned();
    admit(&state, resolved, request, next).await
}

/// `/v1/agents/{agent}/...`: the platform key of the agent's account.
pub async fn agents(
    State(state): State<Arc<MockState>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let agent = params.get("agent").map(String::as_str).unwrap_or_default();
    let resolved = state.agent_tenant(api_key(&request), agent).cloned();
    admit(&state, resolved, request, next).await
}

/// Account-wide `/v1/...` routes (webhook endpoints): any platform key, which names the account.
/// No tenant is known here, so the mock-wide latency applies and no faults are injected.
pub async fn account(State(state): State<Arc<MockState>>, mut request: Request, next: Next) -> Response {
    faults::delay(state.config.faults.latency).await;
    let account = match state.platform_account(api_key(&request)) {
        Ok(account) => account,
        Err(failure) => return refuse(failure, &request),
    };
    request.extensions_mut().insert(account);
    next.run(request).await
}

fn api_key(request: &Request) -> Option<&[u8]> {
    request.headers().get("x-api-key").map(|value| value.as_bytes())
}

/// Runs the handler for the resolved tenant, after its latency and faults; a refusal waits the
/// mock-wide latency, as no tenant's applies.
async fn admit(
    state: &MockState,
    resolved: Result<Arc<TenantState>, Failure>,
    mut request: Request,
    next: Next,
) -> Response {
    let tenant = match resolved {
        Ok(tenant) => tenant,
        Err(failure) => {
            faults::delay(state.config.faults.latency).await;
            return refuse(failure, &request);
        }
    };
    let faults = tenant.switches().faults;
    faults::delay(faults.latency).await;
    if let Some(failure) = faults::injected(&faults) {
        tracing::debug!(tenant = tenant.name, path = request.uri().path(), code = failure.code(), "injected");
        return failure.into_response();
    }
    request.extensions_mut().insert(tenant);
    next.run(request).await
}

fn refuse(failure: Failure, request: &Request) -> Response {
    // The path and the code only: never the key that was sent.
    tracing::debug!(path = request.uri().path(), code = failure.code(), "x-api-key refused");
    failure.into_response()
}
