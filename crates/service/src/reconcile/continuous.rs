//! Reconciliation inside `work` and `run` (`RELAY_RECONCILE_EVERY`): a round of passes, one per
//! project, over the last `RELAY_RECONCILE_WINDOW`, leaving calls that finished within
//! `RELAY_RECONCILE_SETTLE` to their webhook, then a wait. What was reconciled is in the ledger
//! itself (memory only saves re-reading it), so a restart publishes nothing twice.
//!
//! Each project lists its calls with its own key (design §12): one project's refused key or
//! failing list is logged and counted under its name, and the other projects' passes go on.

use std::ops::ControlFlow;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{reconcile, AmqpLedger, EmbeddedLedger, Ledger, Pass, PassSummary, ReconcileError};
use crate::{
    config::{
        AmqpTarget, BrokerSettings, LeftOut, ProjectName, ReconcileSettings, Topology, WorkerSettings, LEAVES_ALONE,
    },
    polyai::PolyaiClient,
    queue::embedded::EmbeddedQueue,
    telemetry::{names, Metrics},
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

/// Starts the loop when the worker's settings turn it on: every project of the worker but those
/// left out (they forward no call's end of the environment reconciled), each listed by a client
/// of its own (its key, ids and host).
pub fn start(
    worker: &WorkerSettings,
    broker: &BrokerSettings,
    embedded: Option<EmbeddedQueue>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(settings) = worker.reconcile.clone() else { return Ok(()) };
    for LeftOut { project, why } in &settings.left_out {
        tracing::warn!(%project, why, "{LEAVES_ALONE}");
    }
    // A warning rather than a refusal to start: the worker has events to enrich all the same.
    if let Some(why) = settings.off_when_all_left_out(worker.projects.len()) {
        tracing::warn!("reconciliation is off: {why}");
        return Ok(());
    }
    let projects = worker
        .projects
        .iter()
        .filter(|api| !settings.left_out.iter().any(|left| left.project == api.project))
        .map(PolyaiClient::new)
        .collect::<Result<Vec<_>, _>>()?;
    let source = match (&broker.amqp_url, embedded) {
        (Some(target), _) => {
            LedgerSource::Amqp { target: Box::new(target.clone()), topology: Box::new(broker.topology.clone()) }
        }
        (None, Some(queue)) => LedgerSource::embedded(queue, &broker.topology),
        (None, None) => anyhow::bail!("reconciliation needs the embedded queue or AMQP_URL"),
    };
    // Here too, before anything can scrape: the loop's task may not have run yet.
    count_from_zero(&metrics, &projects);
    tokio::spawn(run_continuously(settings, projects, source, metrics, shutdown));
    Ok(())
}

/// Each project's counts at 0 from the start, so that the alerts on their increase fire on the
/// first failure or call reconciled, not the second: the first round runs before anything
/// scrapes, and an alert sees a counter only from its second sample.
fn count_from_zero(metrics: &Metrics, projects: &[PolyaiClient]) {
    count_failures_by(metrics, projects, 0);
    for client in projects {
        let label = client.project().label();
        metrics.record(|| metrics::counter!(names::RECONCILED, "project" => label).increment(0));
    }
}

/// Runs a round every `settings.every` until shutdown: a pass per project, each listing with
/// its client.
pub async fn run_continuously(
    settings: ReconcileSettings,
    projects: Vec<PolyaiClient>,
    source: LedgerSource,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    tracing::info!(
        every_s = settings.every.as_secs(),
        window_s = settings.window.as_secs(),
        settle_s = settings.settle.as_secs(),
        projects = projects.len(),
        "reconciliation on"
    );
    count_from_zero(&metrics, &projects);
    // Kept across rounds: on RabbitMQ its connection holds the reconciler lock.
    let mut amqp: Option<AmqpLedger> = None;
    loop {
        let ledger: Option<&dyn Ledger> = match &source {
            LedgerSource::Embedded(ledger) => Some(ledger),
            LedgerSource::Amqp { target, topology } => {
                if amqp.as_ref().is_some_and(|l| !l.is_connected()) {
                    amqp = None;
                }
                if amqp.is_none() {
                    match AmqpLedger::open(target, Topology::clone(topology)).await {
                        Ok(ledger) => amqp = Some(ledger),
                        Err(error) => {
                            tracing::warn!(%error, "reconciliation cannot reach the broker; the next round retries");
                            count_failures(&metrics, &projects);
                        }
                    }
                }
                match &amqp {
                    Some(ledger) => locked(ledger, &projects, &metrics).await,
                    None => None,
                }
            }
        };
        if let Some(ledger) = ledger {
            if round(&settings, &projects, ledger, &metrics, &shutdown).await.is_break() {
                break;
            }
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

/// The ledger, if this replica holds the lock; `None` when another one reconciles.
async fn locked<'a>(ledger: &'a AmqpLedger, projects: &[PolyaiClient], metrics: &Metrics) -> Option<&'a dyn Ledger> {
    match ledger.try_lock().await {
        Ok(true) => Some(ledger),
        Ok(false) => {
            tracing::debug!("another replica reconciles; this one stands by");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "reconciliation cannot take its lock; the next round retries");
            count_failures(metrics, projects);
            None
        }
    }
}

/// One pass per project, in order. A project whose pass fails is logged and counted, and the
/// next one goes on; a failing ledger (every project's) ends the round, counted for each project
/// left. `Break` at shutdown.
async fn round(
    settings: &ReconcileSettings,
    projects: &[PolyaiClient],
    ledger: &dyn Ledger,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> ControlFlow<()> {
    for (index, client) in projects.iter().enumerate() {
        let project = client.project();
        match reconcile(&pass_now(settings, false), client, ledger, shutdown, metrics).await {
            Ok(summary) => log(project, &summary),
            Err(ReconcileError::Interrupted) => return ControlFlow::Break(()),
            Err(error @ ReconcileError::Ledger(_)) => {
                tracing::warn!(%error, "reconciliation round failed; the next one retries");
                count_failures(metrics, &projects[index..]);
                return ControlFlow::Continue(());
            }
            Err(error @ ReconcileError::List(_)) => {
                tracing::warn!(%project, %error, "reconciling this project failed; the other projects go on, and the next round retries it");
                count_failures(metrics, std::slice::from_ref(client));
            }
        }
    }
    ControlFlow::Continue(())
}

/// A failed pass for each of `projects`, so that `RelayReconcileFailing` fires: a list that
/// fails is one project's, a ledger that cannot be read or written fails every project's pass.
fn count_failures(metrics: &Metrics, projects: &[PolyaiClient]) {
    count_failures_by(metrics, projects, 1);
}

fn count_failures_by(metrics: &Metrics, projects: &[PolyaiClient], failures: u64) {
    for client in projects {
        let label = client.project().label();
        metrics.record(|| metrics::counter!(names::RECONCILE_FAILURES, "project" => label).increment(failures));
    }
}

fn log(project: &ProjectName, summary: &PassSummary) {
    let (listed, reconciled, known, refused) =
        (summary.listed, summary.reconciled, summary.known, summary.left_to_polyai);
    if reconciled > 0 {
        tracing::warn!(%project, listed, reconciled, known, refused, "calls finished without a webhook were reconciled: check the webhook registration, its secret and PolyAI's deliveries");
    } else if refused > 0 {
        tracing::warn!(%project, listed, known, refused, "calls whose every webhook the broker refused are left to PolyAI's retries for now: check the worker's queue and its length limit");
    } else {
        tracing::debug!(%project, listed, known, "reconciliation pass: every finished call is known");
    }
}
