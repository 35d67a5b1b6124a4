//! Wiring: the queue backend, the receiver's HTTP server and the worker, started together and
//! stopped in the order that loses nothing (stop accepting → drain → close the broker).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{BrokerSettings, ReceiverSettings, WorkerSettings},
    queue::Backend,
    receiver::{self, Receiver},
    telemetry::Metrics,
    worker::Worker,
};

/// How long the HTTP server gets to finish in-flight requests after a shutdown signal. Each is
/// bounded by the ack deadline already; this bounds slow clients too.
const HTTP_DRAIN: Duration = Duration::from_secs(8);

/// What to run in this process.
pub struct Components {
    pub broker: BrokerSettings,
    /// `Some` to receive webhooks (`run`, `serve`).
    pub receiver: Option<ReceiverSettings>,
    /// `Some` to enrich events (`run`, `work`).
    pub worker: Option<WorkerSettings>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (and webhooks, with a receiver).
    pub listen: SocketAddr,
}

/// A started relay.
pub struct Running {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Resolves once everything has stopped after `shutdown` was cancelled.
    pub stopped: JoinHandle<anyhow::Result<()>>,
    /// What `/readyz` answers, to wait on.
    pub readiness: receiver::Readiness,
    /// The queue, for a worker driven step by step (tests).
    pub backend: Arc<Backend>,
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

    let mut worker_task = None;
    let mut readiness = receiver::publisher_readiness(publisher.clone());
    if let Some(settings) = &components.worker {
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

    let router = match components.receiver {
        Some(settings) => {
            let event_types = components.broker.topology.event_types.clone();
            let receiver = Arc::new(Receiver::new(settings, event_types, publisher.clone(), metrics));
            receiver::router(receiver, readiness.clone())
        }
        None => receiver::ops_router(readiness.clone(), metrics),
    };
    let listener = TcpListener::bind(components.listen)
        .await
        .with_context(|| format!("RELAY_LISTEN: cannot listen on {}", components.listen))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, "listening");

    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(server_shutdown.cancelled_owned()).await
    });

    let stopped = tokio::spawn(async move {
        shutdown.cancelled().await;
        match tokio::time::timeout(HTTP_DRAIN, server).await {
            Ok(Ok(result)) => result.context("HTTP server failed")?,
            Ok(Err(join)) => return Err(join).context("HTTP server panicked"),
            // Not closed here: their connections end with the process, which exits next.
            Err(_) => tracing::warn!("requests still open after the drain time; stopping without them"),
        }
        if let Some(task) = worker_task {
            task.await.context("worker panicked")?;
        }
        broker_shutdown.cancel();
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running { local_addr, stopped, readiness, backend })
}
