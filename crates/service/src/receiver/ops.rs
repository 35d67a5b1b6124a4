//! Health, readiness and metrics endpoints.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use tokio::sync::watch;

use crate::{
    queue::Publisher,
    spool::Spool,
    telemetry::{names, Metrics},
    worker::PausedProjects,
};

/// What `/readyz` asks: can the queue take a publish, and can the worker's events flow (not
/// every project paused by a refused key)?
#[derive(Clone)]
pub struct Readiness {
    publisher: Option<Arc<dyn Publisher>>,
    /// The worker's paused projects, when this process runs a worker.
    worker_paused: Option<watch::Receiver<PausedProjects>>,
    /// A spool that accepts webhooks keeps the receiver ready while the broker is away.
    spool: Option<Spool>,
}

impl Readiness {
    pub fn new(publisher: Option<Arc<dyn Publisher>>, worker_paused: Option<watch::Receiver<PausedProjects>>) -> Self {
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
        let worker_flows = self.worker_paused.as_ref().is_none_or(|paused| !paused.borrow().all());
        queue_ready && worker_flows
    }

    /// The projects whose key the API refuses, `acme-uk, acme-us`; `None` when none is.
    pub fn paused_projects(&self) -> Option<String> {
        let paused = self.worker_paused.as_ref()?.borrow();
        (!paused.names.is_empty()).then(|| paused.list())
    }

    /// Resolves once [`Self::is_ready`] answers `ready` (for tests and callers that wait on it).
    pub async fn wait_until(&self, ready: bool) {
        let mut queue = self.publisher.as_ref().map(|p| p.readiness());
        let mut paused = self.worker_paused.clone();
        let mut spool = self.spool.as_ref().map(Spool::level);
        while self.is_ready() != ready {
            tokio::select! {
                _ = changed(&mut queue) => {}
                _ = changed(&mut paused) => {}
                _ = changed(&mut spool) => {}
            }
        }
    }
}

/// The next change of an optional watch; never, for none (or one whose sender is gone).
async fn changed<T>(watch: &mut Option<watch::Receiver<T>>) {
    let changed = match watch {
        Some(watch) => watch.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// What `/readyz` and `/metrics` need: the readiness, and the recorder its gauge goes to. The
/// gauge is set at every scrape too, so it is current whether or not anything probes `/readyz`.
#[derive(Clone)]
pub struct Ops {
    pub readiness: Readiness,
    pub metrics: Metrics,
    /// The label of the gauge: receivers and workers are often scraped under one job, and an
    /// alert that none is ready must tell them apart.
    pub command: &'static str,
}

impl Ops {
    /// [`Readiness::is_ready`], also recorded as the `relay_ready` gauge.
    fn check(&self) -> bool {
        let ready = self.readiness.is_ready();
        let command = self.command;
        self.metrics.record(|| metrics::gauge!(names::READY, "command" => command).set(if ready { 1.0 } else { 0.0 }));
        ready
    }
}

/// Alive: the process answers HTTP. Deliberately independent of the broker, so an outage makes
/// pods unready, not restarted.
pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// `ready` or `not ready`, naming the paused projects either way: an operator sees which one is
/// stuck, also while the others keep the relay ready.
pub async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let (status, verdict) =
        if ops.check() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") };
    match ops.readiness.paused_projects() {
        Some(paused) => (status, format!("{verdict}; paused projects: {paused}\n")),
        None => (status, format!("{verdict}\n")),
    }
}

pub async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    ops.check();
    ([("content-type", "text/plain; version=0.0.4")], ops.metrics.render())
}
