//! Health, readiness and metrics endpoints.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::{queue::Publisher, spool::Spool, telemetry::names};

/// What `/readyz` asks: can the queue take a publish, and is the worker not paused?
#[derive(Clone)]
pub struct Readiness {
    publisher: Option<Arc<dyn Publisher>>,
    worker_paused: Option<watch::Receiver<bool>>,
    /// A spool that accepts webhooks keeps the receiver ready while the broker is away.
    spool: Option<Spool>,
}

impl Readiness {
    pub fn new(publisher: Option<Arc<dyn Publisher>>, worker_paused: Option<watch::Receiver<bool>>) -> Self {
        Self { publisher, worker_paused, spool: None }
    }

    /// Ready while the broker takes publishes or, failing that, the spool takes webhooks.
    pub fn with_spool(mut self, spool: Spool) -> Self {
        self.spool = Some(spool);
        self
    }

    pub fn is_ready(&self) -> bool {
        let spool_accepts = self.spool.as_ref().is_some_and(Spool::accepts);
        let queue_ready = spool_accepts || self.publisher.as_ref().is_none_or(|p| p.is_ready());
        let worker_running = self.worker_paused.as_ref().is_none_or(|paused| !*paused.borrow());
        queue_ready && worker_running
    }

    /// [`Self::is_ready`], also recorded as the `relay_ready` gauge.
    fn check(&self) -> bool {
        let ready = self.is_ready();
        metrics::gauge!(names::READY).set(if ready { 1.0 } else { 0.0 });
        ready
    }
}

/// What `/metrics` needs: the recorder, and the readiness to record just before rendering, so
/// the gauge is current at every scrape whether or not anything probes `/readyz`.
#[derive(Clone)]
pub struct Scrape {
    pub readiness: Readiness,
    pub handle: PrometheusHandle,
}

/// Alive: the process answers HTTP. Deliberately independent of the broker, so an outage makes
/// pods unready, not restarted.
pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

pub async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    if readiness.check() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub async fn metrics(State(scrape): State<Scrape>) -> impl IntoResponse {
    scrape.readiness.check();
    ([("content-type", "text/plain; version=0.0.4")], scrape.handle.render())
}
