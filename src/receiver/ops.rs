//! Health, readiness and metrics endpoints.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::queue::Publisher;

/// What `/readyz` asks: can the queue take a publish, and is the worker not paused?
#[derive(Clone)]
pub struct Readiness {
    publisher: Option<Arc<dyn Publisher>>,
    worker_paused: Option<watch::Receiver<bool>>,
}

impl Readiness {
    pub fn new(publisher: Option<Arc<dyn Publisher>>, worker_paused: Option<watch::Receiver<bool>>) -> Self {
        Self { publisher, worker_paused }
    }

    pub fn is_ready(&self) -> bool {
        let queue_ready = self.publisher.as_ref().is_none_or(|p| p.is_ready());
        let worker_running = self.worker_paused.as_ref().is_none_or(|paused| !*paused.borrow());
        queue_ready && worker_running
    }
}

/// Alive: the process answers HTTP. Deliberately independent of the broker, so an outage makes
/// pods unready, not restarted.
pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

pub async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub async fn metrics(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], handle.render())
}
