//! The worker (design §5): consume raw events, fetch each conversation, publish enriched
//! records, ack only after the broker confirmed what replaces the input.

mod audio;
mod outage;
mod outcome;
mod pause;
mod policy;
mod process;
mod projects;
pub mod record;
#[cfg(test)]
mod tests;
mod throttle;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{field::Empty, Instrument};

pub use audio::prepare_dir as prepare_audio_dir;
pub use pause::PausedProjects;
pub use policy::RetryPolicy;
pub use throttle::Throttle;

use self::{
    pause::Pauses,
    projects::{Projects, UNKNOWN_LABEL},
};

use crate::{
    backoff::RECONNECT,
    config::WorkerSettings,
    log_limit::LogLimit,
    queue::{ConsumeError, Consumer, Delivery, Publisher, Source},
    telemetry::{names, trace_context, traces::trace_span, Metrics},
};

/// How long in-flight events get to finish at shutdown or pause; what is left then goes back
/// to the queue when the consumer closes. Keeps the whole shutdown well inside 10 s.
const DRAIN: Duration = Duration::from_secs(5);

/// A consumer that ends this soon after it was opened, having handed out nothing, counts as a
/// failed open: a queue that cannot be read (the embedded store's look gives up on a lock after
/// 5 s), a consumer cancelled as it starts. One that ran longer (idle, then its connection
/// lost) is reopened at once.
const ENDED_SOON: Duration = Duration::from_secs(10);

/// How to settle a delivery once it has been processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: its record, retry, dead letter or hold in a delay queue is confirmed.
    Ack,
    /// Could not publish its outcome: give it back to the queue.
    Requeue,
}

impl Settle {
    /// For the `ack` span of a trace.
    fn label(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Requeue => "requeue",
        }
    }
}

/// Why the worker stopped taking deliveries from a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Shutdown, or every project paused.
    Stopping,
    /// The consumer handed out no more: its connection lost, cancelled, or the queue unreadable.
    /// `delivered`: whether it handed out any event first.
    Lost { delivered: bool },
}

/// What one step of the worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Took an event, processed it, and settled it so.
    Processed(Settle),
    /// Nothing was ready.
    Empty,
}

pub struct Worker {
    /// The projects it fetches for, each with its own client and pace (design §12).
    projects: Projects,
    publisher: Arc<dyn Publisher>,
    policy: RetryPolicy,
    /// The projects whose key the API refuses: their events are held back; with all of them
    /// paused nothing is consumed and `/readyz` answers 503.
    pauses: Pauses,
    concurrency: usize,
    /// API calls in flight at most (`RELAY_API_CONCURRENCY`), across every project. Held only
    /// around a call, so an event publishing its record, acking, or waiting for its project's
    /// turn does not keep a call slot idle.
    api_slots: Semaphore,
    /// How often a paused project's key is probed, and how long its events wait between looks.
    auth_probe_interval: Duration,
    /// `Some` when recordings are saved.
    audio: Option<crate::config::AudioSettings>,
    /// This relay's recorder (its own in tests, the process's in production).
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl Worker {
    pub fn new(
        settings: &WorkerSettings,
        publisher: Arc<dyn Publisher>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        // RELAY_API_RATE caps each project's calls: each has its own key, so its own quota.
        let projects = Projects::new(&settings.projects, settings.rate)?;
        // Every project's gauge from the start, so an alert on it sees each project, paused or not.
        for project in projects.iter() {
            let label = project.label();
            metrics.record(|| metrics::gauge!(names::WORKER_PAUSED, "project" => label).set(0.0));
        }
        // The counts alerts watch the increase of, at 0 from the start: such an alert sees a
        // counter only from its second sample, so the first dead letter of a kind, or the first
        // refusal of a key, would go unseen.
        for project in projects.iter() {
            for status in ["401", "403"] {
                let label = project.label();
                metrics
                    .record(|| metrics::counter!(names::FETCHES, "project" => label, "status" => status).increment(0));
            }
            let label = project.label();
            metrics
                .record(|| metrics::counter!(names::RETRIES, "project" => label, "reason" => "api_down").increment(0));
            // RelayApiDown stays quiet while the project's events are enriched.
            let label = project.label();
            metrics.record(|| metrics::counter!(names::ENRICHED, "project" => label).increment(0));
            if settings.audio.is_some() {
                // RelayRecordingsDown: recordings unanswered, and none saved or said to be none.
                for result in ["unanswered", "saved", "none"] {
                    let label = project.label();
                    metrics.record(|| {
                        metrics::counter!(names::RECORDINGS, "project" => label, "result" => result).increment(0)
                    });
                }
            }
        }
        let labels = projects.iter().map(|project| (project.label(), &outcome::DEAD_LETTER_REASONS[..]));
        for (label, reasons) in labels.chain([(UNKNOWN_LABEL.to_owned(), &[outcome::UNKNOWN_PROJECT][..])]) {
            for &reason in reasons {
                let label = label.clone();
                metrics.record(|| {
                    metrics::counter!(names::DEAD_LETTERS, "project" => label, "reason" => reason).increment(0)
                });
            }
        }
        Ok(Self {
            pauses: Pauses::new(projects.len()),
            projects,
            publisher,
            policy: RetryPolicy {
                max_attempts: settings.max_attempts,
                base_delay: settings.retry_base_delay,
                max_delay: settings.retry_max_delay,
            },
            concurrency: settings.concurrency,
            api_slots: Semaphore::new(settings.concurrency),
            auth_probe_interval: settings.auth_probe_interval,
            audio: settings.audio.clone(),
            metrics,
            shutdown,
        })
    }

    fn events_in_progress(&self) -> usize {
        self.concurrency * 4
    }

    /// Watches which projects are paused (for `/readyz`).
    pub fn paused(&self) -> watch::Receiver<PausedProjects> {
        self.pauses.subscribe()
    }

    /// Consumes until shutdown, reopening the consumer after broker failures and pauses.
    pub async fn run(self: Arc<Self>, source: Arc<dyn Source>) {
        // Events in progress: four times the API concurrency, so while some publish and ack,
        // others keep every API slot busy (measured in BENCHMARKS.md: 69% of the ideal rate at
        // 1x, 83% at 2x, about 90% at 4x). The prefetch matches: the queue hands out no more.
        let prefetch = u16::try_from(self.events_in_progress()).unwrap_or(u16::MAX);
        if let Some(audio) = &self.audio {
            let dir = audio.dir.clone();
            tokio::task::spawn_blocking(move || audio::remove_stale_parts(&dir));
        }
        let mut failures = 0u32;
        let unreachable = LogLimit::default();
        while !self.shutdown.is_cancelled() {
            if self.pauses.every_project() {
                self.wait_while_every_project_is_paused().await;
                continue;
            }
            let failure = match source.open(prefetch).await {
                Ok(mut consumer) => {
                    tracing::info!(prefetch, concurrency = self.concurrency, "worker consuming");
                    let opened = tokio::time::Instant::now();
                    match self.consume(consumer.as_mut()).await {
                        // A queue that cannot be read, a consumer cancelled as it starts:
                        // reopened at the pace of a failed open, not at once in a loop.
                        Ended::Lost { delivered: false } if opened.elapsed() < ENDED_SOON => {
                            "the consumer ended soon after it was opened, having handed out nothing".to_owned()
                        }
                        _ => {
                            failures = 0;
                            continue;
                        }
                    }
                }
                Err(error) => error.to_string(),
            };
            // The publisher's pace: the consumer is back as soon as the publisher is.
            failures = failures.saturating_add(1);
            let delay = RECONNECT.delay(failures);
            if let Some(unsaid) = unreachable.admit("unreachable") {
                tracing::warn!(
                    error = failure,
                    retry_in_ms = delay.as_millis() as u64,
                    failures,
                    unsaid,
                    "worker cannot consume"
                );
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!("worker stopped");
    }

    async fn consume(self: &Arc<Self>, consumer: &mut dyn Consumer) -> Ended {
        let slots = Arc::new(Semaphore::new(self.events_in_progress()));
        let mut tasks = JoinSet::new();
        let mut paused = self.pauses.subscribe();
        let mut delivered = false;
        let ended = 'consuming: loop {
            // Take a slot before a delivery, so events wait in the queue, not in memory.
            let slot = tokio::select! {
                _ = self.shutdown.cancelled() => break Ended::Stopping,
                _ = paused.wait_for(PausedProjects::all) => break Ended::Stopping,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            // Nor take one while its outcome cannot be published (broker down or blocking
            // publishers): it would only wait in memory for the broker.
            if !self.publisher.is_ready() {
                tracing::warn!("the queue does not take publishes; the worker waits for it");
                let mut ready = self.publisher.readiness();
                tokio::select! {
                    _ = self.shutdown.cancelled() => break 'consuming Ended::Stopping,
                    _ = ready.wait_for(|ready| *ready) => {}
                }
                tracing::info!("the queue takes publishes again; the worker resumes");
            }
            let delivery = tokio::select! {
                _ = self.shutdown.cancelled() => break Ended::Stopping,
                _ = paused.wait_for(PausedProjects::all) => break Ended::Stopping,
                delivery = consumer.next() => match delivery {
                    Some(delivery) => delivery,
                    None => break Ended::Lost { delivered },
                },
            };
            delivered = true;
            let worker = self.clone();
            tasks.spawn(async move {
                worker.settle(delivery).await;
                drop(slot);
            });
            while tasks.try_join_next().is_some() {}
        };
        if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!(left = tasks.len(), "in-flight events did not finish in time; they go back to the queue");
            tasks.abort_all();
        }
        ended
    }

    /// One step: takes an event that is ready now, if any, processes and settles it. The
    /// consuming loop ([`Self::run`]) does the same for every delivery; tests drive this instead
    /// to drain a queue without waiting on clocks.
    pub async fn process_one(&self, source: &dyn Source) -> Result<Step, ConsumeError> {
        Ok(match source.get().await? {
            Some(delivery) => Step::Processed(self.settle(delivery).await),
            None => Step::Empty,
        })
    }

    /// Processes `delivery` and settles it (ack or requeue) as the outcome says: what the
    /// consuming loop does with each delivery, and a test with each one it takes from a consumer.
    pub async fn settle(&self, delivery: Delivery) -> Settle {
        let message = &delivery.message;
        let span = tracing::info_span!(
            "event",
            event_id = %message.message_id,
            event_type = %message.event_type,
            attempts = message.attempts(),
            redelivered = delivery.redelivered,
            project = Empty,
            outcome = Empty,
        );
        // The same trace as the webhook (or as the attempt that scheduled this retry); an event
        // without `traceparent` (backfill, reconcile, replay) starts a trace of its own.
        trace_context::continue_from(&span, &message.headers);
        let settle = self.process(message).instrument(span.clone()).await;
        let ack = span.in_scope(|| trace_span!("ack", settle = settle.label()));
        let result = match settle {
            Settle::Ack => delivery.acker.ack().instrument(ack).await,
            Settle::Requeue => delivery.acker.requeue().instrument(ack).await,
        };
        if let Err(error) = result {
            // The broker will redeliver it: at-least-once, consumers dedupe on message_id.
            span.in_scope(|| tracing::warn!(%error, ?settle, "could not settle the delivery"));
        }
        settle
    }

    /// While every project's key is refused, nothing can flow: events wait in the queue, not
    /// bouncing through delay queues, until a project's probe finds its key accepted again.
    async fn wait_while_every_project_is_paused(&self) {
        let mut paused = self.pauses.subscribe();
        let names = paused.borrow().list();
        tracing::warn!(projects = %names, "the API refuses every project's key; the worker takes no events until one is accepted again");
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = paused.wait_for(|p| !p.all()) => tracing::info!("a project's key is accepted again; the worker resumes"),
        }
    }
}
