//! Logs (tracing), traces (OpenTelemetry, opt-in) and metrics (Prometheus text on `/metrics`).

#[cfg(test)]
pub mod captured;
mod export_failures;
mod json_fields;
mod json_lines;
mod kept;
mod log_filter;
mod signed_only;
mod timestamp;
pub mod trace_context;
pub mod traces;

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{fmt, layer::SubscriberExt, registry::LookupSpan, util::SubscriberInitExt, Layer};

pub use self::kept::Kept;
use self::log_filter::LogFilter;

use crate::config::LogFormat;

/// Metric names, in one place so dashboards, alerts and tests agree with the code.
pub mod names {
    /// Webhook requests by `outcome` (accepted, spooled, ignored, duplicate, duplicate_in_flight, unauthorized, bad_request, too_large, timeout, overloaded, body_memory_full, body_cut, evicted, unavailable, spool_full).
    pub const REQUESTS: &str = "relay_webhook_requests_total";
    /// Signature failures by `reason`.
    pub const VERIFY_FAILURES: &str = "relay_signature_failures_total";
    /// Verified requests by matched `scheme` and `secret` (current or previous).
    pub const VERIFIED: &str = "relay_signature_verified_total";
    /// Verified events dropped on purpose, by `reason` (type or environment).
    pub const IGNORED: &str = "relay_events_ignored_total";
    /// Seconds from request start to the broker's confirm, for accepted webhooks.
    pub const ACK_SECONDS: &str = "relay_ack_duration_seconds";
    /// Publisher confirms by `destination` and `result` (ack, nack, returned, unavailable, timeout, error).
    pub const CONFIRMS: &str = "relay_publish_confirms_total";
    /// Broker answers to publishes given up at a deadline (counted `timeout` in [`CONFIRMS`]),
    /// by `destination` and `result`: an `ack` is a copy that reached the broker after all.
    pub const LATE_CONFIRMS: &str = "relay_publish_confirms_late_total";
    /// API fetches by `project` and `status` (200, 404, 429, 5xx codes, transport). Every worker
    /// metric's `project` is a configured project's name, or `unknown`: never a header's value.
    pub const FETCHES: &str = "relay_api_fetches_total";
    /// Recordings asked for (`RELAY_AUDIO_DIR`), by `project` and `result`: saved, none (PolyAI
    /// keeps no recording), unanswered (5xx, 408, a timeout, no connection, a body cut short),
    /// disk_failed (the API answered; the WAV could not be written), refused (401, 403),
    /// rate_limited (429), unusable (over `RELAY_AUDIO_MAX`, a name no file can have), rejected
    /// (another 4xx).
    pub const RECORDINGS: &str = "relay_recordings_total";
    /// API 429 answers, by `project`.
    pub const RATE_LIMITED: &str = "relay_api_rate_limited_total";
    /// Events sent to a delay queue, by `project` and `reason` (rate_limited, transient,
    /// not_found, key_refused for a paused project's events, and paced for each stay in a delay
    /// queue of an event whose turn under `RELAY_API_RATE` is more than a second away; those, and
    /// rate_limited, count no attempt).
    pub const RETRIES: &str = "relay_worker_retries_total";
    /// Events dead-lettered by the worker, by `project` and `reason`.
    pub const DEAD_LETTERS: &str = "relay_dead_letters_total";
    /// Enriched records published, by `project`.
    pub const ENRICHED: &str = "relay_enriched_total";
    /// Finished calls that no webhook delivered, put into the worker's queue by reconciliation,
    /// by `project`.
    pub const RECONCILED: &str = "relay_reconciled_total";
    /// Reconciliation passes of the worker's loop that failed for one project (its key refused,
    /// its list failing), by `project`; the other projects' passes go on. A ledger that cannot be
    /// read or written (the broker out of reach, the lock's channel failing) fails every project's.
    pub const RECONCILE_FAILURES: &str = "relay_reconcile_failures_total";
    /// Messages ready in a queue, by `queue` (the worker's input and the dead letters).
    pub const BACKLOG: &str = "relay_queue_backlog";
    /// Messages whose broker return lapin handed to another publish (see
    /// `queue::amqp::confirmed::confirmation`), by `result`: `dead_lettered`, or `failed` when the
    /// dead letter could not be published either, which only the conversations log still holds.
    pub const MISDELIVERED_RETURNS: &str = "relay_misdelivered_returns_total";
    /// Queues of the relay's found deleted under it and declared again, by `queue`: what such a
    /// queue held is gone, and events accepted meanwhile may be only in the conversations log.
    pub const QUEUES_DECLARED_AGAIN: &str = "relay_queues_declared_again_total";
    /// 1 while a `project` is paused because the API refuses its key, else 0 (every project has one).
    pub const WORKER_PAUSED: &str = "relay_worker_paused";
    /// Failed attempts to connect to the broker, by `role` (publisher, consumer): the volume of an
    /// outage, which the log only mentions now and then.
    pub const BROKER_CONNECT_FAILURES: &str = "relay_broker_connect_failures_total";
    /// Publishing sessions replaced because the broker kept refusing a channel's publishes to a
    /// queue (RabbitMQ keeps a full queue's refusal per channel).
    pub const PUBLISHER_REOPENED: &str = "relay_publisher_reopened_total";
    /// 1 while `/readyz` would answer 200, else 0. Set on every scrape of `/metrics` (and every
    /// `/readyz`), so alerts see what the probes see: `up` only says the process answered.
    pub const READY: &str = "relay_ready";
    /// Events in the receiver's spool, waiting for the broker.
    pub const SPOOL_EVENTS: &str = "relay_spool_events";
    /// Bytes of the events in the spool (what `RELAY_SPOOL_MAX` caps).
    pub const SPOOL_BYTES: &str = "relay_spool_bytes";
    /// `RELAY_SPOOL_MAX`, so alerts can say how full the spool is.
    pub const SPOOL_MAX_BYTES: &str = "relay_spool_max_bytes";
    /// Webhooks committed to the spool because the broker was away, blocked or slow to confirm.
    pub const SPOOLED: &str = "relay_spooled_total";
    /// Spooled events the broker confirmed, removed from the spool.
    pub const SPOOL_DRAINED: &str = "relay_spool_drained_total";
    /// Failures of the spool's storage while draining, by `step`: `read`, or `remove` (events
    /// the broker confirmed stay on disk, and nothing more is forwarded until they are removed).
    pub const SPOOL_FAILURES: &str = "relay_spool_failures_total";
    /// Webhook requests whose body is still arriving: they hold a connection but no publishing
    /// capacity (design §10).
    pub const BODIES_READING: &str = "relay_webhook_bodies_reading";
    /// Bytes the webhook bodies being read hold of `RELAY_BODY_MEMORY` (what each holds beyond
    /// its first 16 KiB): near the budget, clients are sending bodies faster than they are
    /// read, and the oldest are cut (design §10).
    pub const BODY_MEMORY: &str = "relay_webhook_body_memory_bytes";
    /// Connections closed at the connection cap to make room for a new one, by `listener`
    /// (webhooks, admin) and the `phase` they were in (head, request, idle): a flood's volume.
    pub const CONNECTIONS_EVICTED: &str = "relay_connections_evicted_total";
}

/// Installs the global tracing subscriber. Logs go to stderr; stdout belongs to commands' output.
pub fn init_logs(format: LogFormat) {
    init_logs_with(format, "info");
}

/// Like [`init_logs`], with the level used when `RUST_LOG` is unset.
pub fn init_logs_with(format: LogFormat, default_level: &str) {
    // The builder, not `log_layer`: without traces, logging stays exactly what it was, statically
    // dispatched. The two must format alike, and both drop unwritable lines (see `log_layer`).
    // The builder's own level is TRACE, so that `RUST_LOG` alone decides.
    let filter = LogFilter::from_env(default_level);
    let builder = fmt().with_max_level(LevelFilter::TRACE).with_writer(std::io::stderr).log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(json_fields::SplicedJsonFields)
            .event_format(json_lines::JsonLines)
            .finish()
            .with(filter.targets.clone())
            .try_init(),
        LogFormat::Pretty => builder
            .fmt_fields(crate::log_escape::EscapedFields::default())
            .finish()
            .with(filter.targets.clone())
            .try_init(),
    };
    filter.warn_if_unreadable(default_level);
}

/// Logs as [`init_logs_with`], plus traces when `with_traces` and the environment asks for them
/// ([`traces::configured`]); keep what it returns and shut it down last, to send the last spans.
pub fn init(format: LogFormat, default_level: &str, with_traces: bool) -> Option<traces::Traces> {
    if with_traces && traces::configured() {
        let filter = LogFilter::from_env(default_level);
        let traces = traces::init(format, filter.targets.clone());
        filter.warn_if_unreadable(default_level);
        return traces;
    }
    init_logs_with(format, default_level);
    None
}

/// Log lines on stderr (stdout belongs to commands' output), in the chosen format: as
/// [`init_logs_with`] writes them, as a layer that [`traces::init`] filters on its own.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    // A log line that cannot be written (stderr a closed pipe: `serve 2>&1 | head -1`) is dropped
    // quietly. By default the subscriber reports it with `eprintln!`, which panics on the same
    // closed pipe, inside whichever task logged: the signal task died that way and SIGTERM was lost.
    let layer = fmt::layer().with_writer(std::io::stderr).log_internal_errors(false);
    match format {
        LogFormat::Json => layer.fmt_fields(json_fields::SplicedJsonFields).event_format(json_lines::JsonLines).boxed(),
        LogFormat::Pretty => layer.fmt_fields(crate::log_escape::EscapedFields::default()).boxed(),
    }
}

/// Where a relay records its metrics, and what its `/metrics` renders.
///
/// A process runs one relay, which records into the process-wide recorder ([`Metrics::global`]);
/// anything recorded with the `metrics` macros outside [`Metrics::record`] lands there too. Tests
/// run many relays in one process and give each a recorder of its own ([`Metrics::isolated`]), so
/// an assertion on one app's `/metrics` sees only what that app did.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    /// Woken after each recording, on a relay's own recorder only: a test waits with
    /// [`Metrics::wait_until`] for what the relay records instead of reading `/metrics` again and
    /// again. `None` on the process-wide recorder, so production pays nothing for it.
    recorded: Option<Arc<tokio::sync::Notify>>,
}

/// The process-wide recorder as `metrics` installs it: a second owner of the same storage.
struct Shared(Arc<PrometheusRecorder>);

impl metrics::Recorder for Shared {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.0.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.0.register_histogram(key, metadata)
    }
}

fn build_recorder() -> PrometheusRecorder {
    // Buckets around the 5 s budget PolyAI gives a webhook.
    let ack_buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(names::ACK_SECONDS.to_owned()), &ack_buckets)
        .expect("bucket list is not empty")
        .build_recorder()
}

impl Metrics {
    /// The process-wide recorder, installed as `metrics`' global recorder on first use.
    pub fn global() -> Self {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let recorder = Arc::new(build_recorder());
                metrics::set_global_recorder(Shared(recorder.clone()))
                    .expect("the metrics recorder is installed once per process");
                Self { recorder, recorded: None }
            })
            .clone()
    }

    /// A recorder of this relay's own (for tests: many relays in one process).
    pub fn isolated() -> Self {
        Self { recorder: Arc::new(build_recorder()), recorded: Some(Arc::default()) }
    }

    /// Runs `record` (a `metrics::counter!(…).increment(…)` and the like) against this recorder.
    pub fn record<T>(&self, record: impl FnOnce() -> T) -> T {
        let recorded = metrics::with_local_recorder(self.recorder.as_ref(), record);
        if let Some(waiters) = &self.recorded {
            waiters.notify_waiters();
        }
        recorded
    }

    /// Resolves once `reached` holds for the Prometheus text of what was recorded, looking again
    /// after each recording. Only a relay's own recorder ([`Metrics::isolated`]) tells of its
    /// recordings; on the process-wide one this resolves only if `reached` holds at once.
    pub async fn wait_until(&self, reached: impl Fn(&str) -> bool) {
        loop {
            // Created before the look: a recording during it still wakes the wait.
            let next = self.recorded.as_ref().map(|waiters| waiters.notified());
            if reached(&self.render()) {
                return;
            }
            match next {
                Some(next) => next.await,
                None => std::future::pending().await,
            }
        }
    }

    /// The Prometheus text of everything recorded so far.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }

    /// Folds recorded histogram samples into their buckets every [`UPKEEP_INTERVAL`] until
    /// `shutdown`. The recorder keeps each sample (8 bytes a webhook) until then or until the next
    /// scrape: with nobody scraping `/metrics`, a busy receiver's memory would grow without bound.
    pub async fn keep_up(self, shutdown: tokio_util::sync::CancellationToken) {
        let handle = self.recorder.handle();
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => handle.run_upkeep(),
            }
        }
    }
}

/// How often histogram samples are folded into buckets: at 10,000 webhooks/s, 400 KB held at most.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus handle (see [`Metrics::global`]).
pub fn metrics() -> PrometheusHandle {
    Metrics::global().recorder.handle()
}
