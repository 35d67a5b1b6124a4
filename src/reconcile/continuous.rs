//! Reconciliation inside `work` and `run` (`RELAY_RECONCILE_EVERY`): a pass over the last
//! `RELAY_RECONCILE_WINDOW`, leaving calls that finished within `RELAY_RECONCILE_SETTLE` to
//! their webhook, then a wait. What was reconciled is in the ledger itself (memory only saves
//! re-reading it), so a restart publishes nothing twice.

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{reconcile, AmqpLedger, EmbeddedLedger, Ledger, Pass, PassSummary, ReconcileError};
use crate::{
    config::{AmqpTarget, BrokerSettings, ReconcileSettings, Topology, WorkerSettings},
    polyai::PolyaiClient,
    queue::embedded::EmbeddedQueue,
    telemetry::Metrics,
};

/// Conversations per list request.
const PAGE_SIZE: u32 = 100;

/// Where the ledger lives.
pub enum LedgerSource {
    Amqp {
        target: Box<AmqpTarget>,
        topology: Box<Topology>,
    },
    /// The process's own embedded queue (it owns the data directory).
    Embedded(EmbeddedLedger),
}

impl LedgerSource {
    pub fn embedded(queue: EmbeddedQueue, topology: &Topology) -> Self {
        Self::Embedded(EmbeddedLedger::new(queue, topology.log_retention))
    }
}

/// The pass that runs now.
pub fn pass_now(settings: &ReconcileSettings, dry_run: bool) -> Pass {
    let now = OffsetDateTime::now_utc();
    let finished_before = now - settings.settle;
    Pass {
        start: now - settings.window,
        end: finished_before,
        finished_before,
        client_env: settings.client_env.clone(),
        page_size: PAGE_SIZE,
        dry_run,
    }
}

/// Starts the loop when the worker's settings turn it on.
pub fn start(
    worker: &WorkerSettings,
    broker: &BrokerSettings,
    embedded: Option<EmbeddedQueue>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(settings) = worker.reconcile.clone() else { return Ok(()) };
    let client = PolyaiClient::new(&worker.projects[0])?;
    let source = match (&broker.amqp_url, embedded) {
        (Some(target), _) => {
            LedgerSource::Amqp { target: Box::new(target.clone()), topology: Box::new(broker.topology.clone()) }
        }
        (None, Some(queue)) => LedgerSource::embedded(queue, &broker.topology),
        (None, None) => anyhow::bail!("reconciliation needs the embedded queue or AMQP_URL"),
    };
    tokio::spawn(run_continuously(settings, client, source, metrics, shutdown));
    Ok(())
}

/// Runs passes every `settings.every` until shutdown.
pub async fn run_continuously(
    settings: ReconcileSettings,
    client: PolyaiClient,
    source: LedgerSource,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    tracing::info!(
        every_s = settings.every.as_secs(),
        window_s = settings.window.as_secs(),
        settle_s = settings.settle.as_secs(),
        "reconciliation on"
    );
    // Kept across passes: on RabbitMQ its connection holds the reconciler lock.
    let mut amqp: Option<AmqpLedger> = None;
    loop {
        let pass = pass_now(&settings, false);
        let outcome = match &source {
            LedgerSource::Embedded(ledger) => reconcile(&pass, &client, ledger, &shutdown, &metrics).await.map(Some),
            LedgerSource::Amqp { target, topology } => {
                if amqp.as_ref().is_some_and(|l| !l.is_connected()) {
                    amqp = None;
                }
                if amqp.is_none() {
                    match AmqpLedger::open(target, Topology::clone(topology)).await {
                        Ok(ledger) => amqp = Some(ledger),
                        Err(error) => {
                            tracing::warn!(%error, "reconciliation cannot reach the broker; next pass retries")
                        }
                    }
                }
                match &amqp {
                    Some(ledger) => locked_pass(ledger, &pass, &client, &shutdown, &metrics).await,
                    None => Ok(None),
                }
            }
        };
        match outcome {
            Ok(Some(summary)) => log(&summary),
            Ok(None) => {}
            Err(ReconcileError::Interrupted) => break,
            Err(error) => tracing::warn!(%error, "reconciliation pass failed; the next one retries"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(settings.every) => {}
        }
    }
    if let Some(ledger) = amqp {
        ledger.close().await;
    }
}

/// A pass, if this replica holds the lock; `None` when another one reconciles.
async fn locked_pass(
    ledger: &AmqpLedger,
    pass: &Pass,
    client: &PolyaiClient,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) -> Result<Option<PassSummary>, ReconcileError> {
    if !ledger.try_lock().await? {
        tracing::debug!("another replica reconciles; this one stands by");
        return Ok(None);
    }
    reconcile(pass, client, ledger as &dyn Ledger, shutdown, metrics).await.map(Some)
}

fn log(summary: &PassSummary) {
    let (listed, reconciled, known) = (summary.listed, summary.reconciled, summary.known);
    if reconciled > 0 {
        tracing::warn!(listed, reconciled, known, "calls finished without a webhook were reconciled: check the webhook registration, its secret and PolyAI's deliveries");
    } else {
        tracing::debug!(listed, known, "reconciliation pass: every finished call is known");
    }
}
