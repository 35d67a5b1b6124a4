//! Wiring: the queue backend, the receiver's HTTP server and the worker, started together and
//! stopped in the order that loses nothing (stop accepting → drain → close the broker).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{BrokerSettings, ReceiverSettings, ServerSettings, SpoolSettings, WorkerSettings},
    listener,
    queue::Backend,
    receiver::{self, Receiver},
    reconcile,
    spool::{Drainer, Spool},
    telemetry::Metrics,
    worker::{self, Worker},
};

/// How long the HTTP server gets to finish in-flight requests after a shutdown signal. Each is
/// bounded by the ack deadline already; this bounds slow clients too.
const HTTP_DRAIN: Duration = Duration::from_secs(8);

/// How long the shutdown waits, last before it closes the broker connection, for withdrawals
/// still being written (each is one publish, unless the broker is away).
const WITHDRAWALS_DRAIN: Duration = Duration::from_secs(5);

/// What to run in this process.
pub struct Components {
    pub broker: BrokerSettings,
    /// `Some` to receive webhooks (`run`, `serve`).
    pub receiver: Option<ReceiverSettings>,
    /// `Some` to enrich events (`run`, `work`).
    pub worker: Option<WorkerSettings>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, and the connection limits.
    pub server: ServerSettings,
    /// `Some` to spool webhooks while the broker is away (a receiver on RabbitMQ only).
    pub spool: Option<SpoolSettings>,
}

/// A started relay.
pub struct Running {
    /// The webhook listener's bound address (useful with port 0); the admin listener's when
    /// there is no receiver.
    pub local_addr: SocketAddr,
    /// The admin listener's bound address.
    pub admin_addr: SocketAddr,
    /// Resolves once everything has stopped after `shutdown` was cancelled.
    pub stopped: JoinHandle<anyhow::Result<()>>,
    /// What `/readyz` answers, to wait on.
    pub readiness: receiver::Readiness,
    /// The queue, for a worker driven step by step (tests).
    pub backend: Arc<Backend>,
    /// The receiver's spool, when it has one: what it holds can be waited on (tests).
    pub spool: Option<Spool>,
}

/// Starts a relay recording into the process-wide metrics recorder.
pub async fn start(components: Components, shutdown: CancellationToken) -> anyhow::Result<Running> {
    start_with(components, Metrics::global(), shutdown).await
}

/// Starts a relay recording into `metrics` (tests give each relay its own).
pub async fn start_with(
    components: Components,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    // First: a spool or a recordings directory that cannot be used stops start-up before
    // anything else runs.
    let spool = open_spool(&components, &metrics)?;
    if let Some(audio) = components.worker.as_ref().and_then(|worker| worker.audio.as_ref()) {
        worker::prepare_audio_dir(&audio.dir)?;
    }
    // Then the listeners: a port in use stops start-up before anything reaches for the broker,
    // so its error line is the last thing the process says.
    let admin = bind("RELAY_ADMIN_LISTEN", components.server.admin_listen).await?;
    let webhooks = match components.receiver {
        Some(settings) => Some((bind("RELAY_LISTEN", settings.listen).await?, settings)),
        None => None,
    };
    // The broker outlives the HTTP server and the worker: it must confirm what they publish while draining.
    let broker_shutdown = CancellationToken::new();
    let backend = Arc::new(Backend::open(&components.broker, metrics.clone(), broker_shutdown.clone())?);
    if !backend.is_amqp() {
        tracing::info!(
            data_dir = %components.broker.data_dir.display(),
            "AMQP_URL is not set: using the embedded queue (one process, records in conversations.jsonl); set AMQP_URL for RabbitMQ in production"
        );
    }
    let publisher = backend.publisher.clone();
    tokio::spawn(metrics.clone().keep_up(shutdown.clone()));

    let mut worker_task = None;
    let mut readiness = receiver::publisher_readiness(publisher.clone());
    if let Some(settings) = &components.worker {
        reconcile::start(settings, &components.broker, backend.embedded.clone(), metrics.clone(), shutdown.clone())?;
        let worker = Arc::new(Worker::new(settings, publisher.clone(), metrics.clone(), shutdown.clone())?);
        readiness = receiver::worker_readiness(publisher.clone(), worker.paused());
        let worker_shutdown = shutdown.clone();
        let worker_backend = backend.clone();
        worker_task = Some(tokio::spawn(async move {
            // Consuming before the topology exists would fail on a missing queue.
            tokio::select! {
                _ = worker_shutdown.cancelled() => return,
                _ = worker_backend.wait_connected() => {}
            }
            worker.run(worker_backend.source.clone()).await
        }));
    }

    let mut drainer_task = None;
    if let Some(spool) = &spool {
        readiness = readiness.with_spool(spool.clone());
        let drainer = Drainer::new(spool.clone(), publisher.clone(), shutdown.clone());
        drainer_task = Some(tokio::spawn(drainer.run()));
    }

    let command = match (webhooks.is_some(), components.worker.is_some()) {
        (true, false) => "serve",
        (false, true) => "work",
        _ => "run",
    };
    let ops = receiver::ops_router(readiness.clone(), metrics.clone(), command);
    let limits = components.server.limits.clone();
    let admin_addr = admin.local_addr()?;
    let admin_server = listener::serve(admin, "admin", ops, limits.clone(), metrics.clone(), shutdown.clone());
    let mut servers = vec![tokio::spawn(admin_server)];
    let mut local_addr = admin_addr;
    let mut withdrawals = None;
    if let Some((webhooks, settings)) = webhooks {
        local_addr = webhooks.local_addr()?;
        let mut receiver = Receiver::new(settings, publisher.clone(), metrics.clone());
        if let Some(spool) = &spool {
            receiver = receiver.with_spool(spool.clone());
        }
        withdrawals = Some(receiver.withdrawals());
        let router = receiver::router(Arc::new(receiver));
        servers.push(tokio::spawn(listener::serve(webhooks, "webhooks", router, limits, metrics, shutdown.clone())));
    }
    tracing::info!(%local_addr, %admin_addr, "listening");
    let server = futures_util::future::join_all(servers);

    let stopped = tokio::spawn(async move {
        shutdown.cancelled().await;
        match tokio::time::timeout(HTTP_DRAIN, server).await {
            Ok(joined) => {
                for result in joined {
                    result.context("HTTP server panicked")?;
                }
            }
            // Not closed here: their connections end with the process, which exits next.
            Err(_) => tracing::warn!("requests still open after the drain time; stopping without them"),
        }
        if let Some(task) = worker_task {
            task.await.context("worker panicked")?;
        }
        // Before the broker closes: an abandoned batch stays spooled, a confirmed one is removed.
        if let Some(task) = drainer_task {
            task.await.context("spool drainer panicked")?;
        }
        // Before the broker closes: a refused event's copy withdrawn from the conversations log.
        if let Some(withdrawals) = withdrawals {
            drain_withdrawals(withdrawals).await;
        }
        broker_shutdown.cancel();
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running { local_addr, admin_addr, stopped, readiness, backend, spool })
}

/// Waits, for [`WITHDRAWALS_DRAIN`] at most, until no withdrawal is being written: looked at
/// last before the broker closes, so that one a request still open after the HTTP drain started
/// meanwhile is in; one started while this waits is waited for too.
async fn drain_withdrawals(withdrawals: TaskTracker) {
    withdrawals.close();
    let drained = tokio::time::timeout(WITHDRAWALS_DRAIN, async {
        while !withdrawals.is_empty() {
            withdrawals.wait().await;
        }
    });
    if drained.await.is_err() {
        tracing::warn!(
            left = withdrawals.len(),
            "withdrawals of refused events not written before shutdown: should every retry of their webhooks be refused too, `log replay` recovers their calls"
        );
    }
}

async fn bind(variable: &str, address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("{variable}: cannot listen on {address}"))
}

/// The spool, when one is configured for a receiver on RabbitMQ.
fn open_spool(components: &Components, metrics: &Metrics) -> anyhow::Result<Option<Spool>> {
    let Some(settings) = &components.spool else { return Ok(None) };
    if components.receiver.is_none() {
        return Ok(None);
    }
    if components.broker.amqp_url.is_none() {
        anyhow::bail!(
            "RELAY_SPOOL_DIR is set but AMQP_URL is not: the embedded queue is already on local disk; unset RELAY_SPOOL_DIR or set AMQP_URL"
        );
    }
    let spool = Spool::open(settings, metrics.clone())?;
    tracing::info!(dir = %spool.dir().display(), max_bytes = settings.max_bytes, "spool on: webhooks the broker cannot take in time are committed here and answered 204");
    Ok(Some(spool))
}
