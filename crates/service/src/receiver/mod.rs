//! The HTTP side: the webhook endpoint (design §3) and the operational endpoints (admin listener).

mod body;
mod endpoint;
mod enqueue;
mod meters;
mod ops;
mod recent;
mod rejection;
mod webhook;
mod withdraw;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::{config::ReceiverSettings, queue::Publisher, spool::Spool, telemetry::Metrics, worker::PausedProjects};

pub use body::{CUT_AFTER as BODY_CUT_AFTER, FREE_BYTES as FREE_BODY_BYTES};
pub use ops::Readiness;

/// Everything the webhook handler needs, shared by all requests.
pub struct Receiver {
    /// One per project, in the settings' order; each route's state holds its index.
    endpoints: Vec<endpoint::Endpoint>,
    /// Where verified events go: answered 204 only once this confirmed them.
    publisher: Arc<dyn Publisher>,
    /// Limits every request is held to: body size, read timeout, ack deadline.
    settings: ReceiverSettings,
    /// Bounds the signed requests being published at once; one that finds no permit is shed with 503.
    in_flight: Semaphore,
    /// Bounds what the bodies being read hold together, before anyone knows who sent them.
    body_memory: body::BodyMemory,
    /// Where events go while the broker cannot take them; `None`: they are answered 503.
    spool: Option<Spool>,
    /// This relay's recorder (its own in tests, the process's in production).
    metrics: Metrics,
    /// Deliveries enqueued within the timestamp tolerance, to answer replays without enqueueing,
    /// and those being stored, whose copies wait for the outcome.
    recent: recent::RecentDeliveries,
    /// Withdrawals being written: a shutdown waits for them, for a while.
    withdrawals: TaskTracker,
}

impl Receiver {
    pub fn new(settings: ReceiverSettings, publisher: Arc<dyn Publisher>, metrics: Metrics) -> Self {
        // The widest tolerance: a replay is recognised for as long as any project would verify it.
        let tolerance = settings.projects.iter().map(|p| p.signature.tolerance).max().unwrap_or_default();
        Self {
            endpoints: settings.projects.iter().map(endpoint::Endpoint::new).collect(),
            publisher,
            in_flight: Semaphore::new(settings.max_in_flight),
            body_memory: body::BodyMemory::new(settings.body_memory, &metrics),
            recent: recent::RecentDeliveries::new(tolerance, settings.max_in_flight),
            settings,
            spool: None,
            metrics,
            withdrawals: TaskTracker::new(),
        }
    }

    /// The withdrawals being written ([`withdraw`]), for the shutdown to wait for once no
    /// request is left to start one.
    pub fn withdrawals(&self) -> TaskTracker {
        self.withdrawals.clone()
    }

    /// Spools events the broker cannot take in time instead of answering 503.
    pub fn with_spool(mut self, spool: Spool) -> Self {
        self.spool = Some(spool);
        self
    }
}

/// `/healthz`, `/readyz` and `/metrics`: served by every command that runs long.
/// `command`: the command this process runs (`run`, `serve`, `work`), the label of its
/// `relay_ready`.
pub fn ops_router(readiness: Readiness, metrics: Metrics, command: &'static str) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .with_state(ops::Ops { readiness, metrics, command })
}

/// The webhook listener's router: each project's path and nothing else (the operational
/// endpoints are on the admin listener, design §10).
pub fn router(receiver: Arc<Receiver>) -> Router {
    let mut router = Router::new();
    for (project, settings) in receiver.settings.projects.iter().enumerate() {
        let route = endpoint::Route { receiver: receiver.clone(), project };
        router = router.route(&settings.path, post(webhook::receive).with_state(route));
    }
    // No body-limit layer: one would answer a declared length over the limit itself, uncounted
    // and unlogged. The handler refuses it as early, in `body::read`, and says so.
    router
}

/// Readiness of a process that only receives: the broker must accept publishes.
pub fn publisher_readiness(publisher: Arc<dyn Publisher>) -> Readiness {
    Readiness::new(Some(publisher), None)
}

/// Readiness that also reflects the worker's projects paused by a refused API key.
pub fn worker_readiness(publisher: Arc<dyn Publisher>, paused: watch::Receiver<PausedProjects>) -> Readiness {
    Readiness::new(Some(publisher), Some(paused))
}

#[cfg(test)]
mod tests;
