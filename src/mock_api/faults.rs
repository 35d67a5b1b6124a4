//! Fault injection (`--latency`, `--rate-429`, `--rate-5xx`): the answers a client's retry table
//! is for. `--not-found-until` lives with the by-id handlers, which know the conversation.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{error::Failure, state::MockState};

/// Waits `latency` before answering, whatever the answer.
pub async fn latency(State(state): State<Arc<MockState>>, request: Request, next: Next) -> Response {
    let delay = state.config.faults.latency;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

/// Answers a share of requests 429 or 503 instead of passing them on.
pub async fn inject(State(state): State<Arc<MockState>>, request: Request, next: Next) -> Response {
    let faults = &state.config.faults;
    // `random()` is in [0, 1): a rate of 1 always fires, 0 never.
    if faults.rate_429 > 0.0 && rand::random::<f64>() < faults.rate_429 {
        tracing::debug!(path = request.uri().path(), "injected 429");
        let retry_after_secs = faults.retry_after.as_secs() + u64::from(faults.retry_after.subsec_nanos() > 0);
        return Failure::RateLimited { retry_after_secs }.into_response();
    }
    if faults.rate_5xx > 0.0 && rand::random::<f64>() < faults.rate_5xx {
        tracing::debug!(path = request.uri().path(), "injected 503");
        return Failure::Unavailable.into_response();
    }
    next.run(request).await
}
