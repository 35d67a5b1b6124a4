//! `x-api-key` checks: the v3 key on `/v3/...`, the workspace key on `/v1/...` (design §2).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use secrecy::{ExposeSecret, SecretString};

use super::{error::Failure, state::MockState};

pub async fn api_key(State(state): State<Arc<MockState>>, request: Request, next: Next) -> Response {
    check(&state.config.api_key, request, next).await
}

pub async fn platform_key(State(state): State<Arc<MockState>>, request: Request, next: Next) -> Response {
    check(state.config.platform_key(), request, next).await
}

async fn check(expected: &SecretString, request: Request, next: Next) -> Response {
    if accepted(expected, request.headers()) {
        next.run(request).await
    } else {
        tracing::debug!(path = request.uri().path(), "x-api-key missing or wrong");
        Failure::Unauthorised.into_response()
    }
}

/// Compares without stopping at the first difference, as a real key check must; cheap here too.
fn accepted(expected: &SecretString, headers: &HeaderMap) -> bool {
    let Some(given) = headers.get("x-api-key") else {
        return false;
    };
    let (given, expected) = (given.as_bytes(), expected.expose_secret().as_bytes());
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}
