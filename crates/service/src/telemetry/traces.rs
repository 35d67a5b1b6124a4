//! Traces over OTLP/HTTP (design §13), opt-in: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the spans the code already has are exported through
//! `tracing-opentelemetry`. Unset, nothing is built: no exporter thread, no OpenTelemetry layer,
//! and [`enabled`] is false so the hot path skips every trace-only span and header.
//!
//! The SDK reads the standard variables itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, `…_TIMEOUT`, `OTEL_BSP_*`.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    trace::{BatchSpanProcessor, SdkTracerProvider},
    Resource,
};
use tracing::{level_filters::LevelFilter, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    filter::{filter_fn, FilterExt, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
    Layer,
};

use super::{export_failures::Reported, signed_only::SignedOnly};
use crate::config::LogFormat;

/// Target of the spans that exist only for traces (verify, publish, fetch, audio, ack). They are
/// hidden from the logs, so a log line keeps the `webhook` or `event` span with its event id.
pub const TARGET: &str = "polyai_relay::trace";

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
const SERVICE_NAME: &str = "polyai-relay";

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. False unless [`init`] found an endpoint: then trace-only spans
/// are `Span::none()` and no `traceparent` is written.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A span seen only by the trace exporter (target [`TARGET`], level INFO), or `Span::none()`
/// when traces are off, which costs one atomic load.
macro_rules! trace_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        if $crate::telemetry::traces::enabled() {
            tracing::info_span!(target: $crate::telemetry::traces::TARGET, $name $(, $($fields)*)?)
        } else {
            tracing::Span::none()
        }
    };
}
pub(crate) use trace_span;

/// Adds an attribute to `span`'s trace only, leaving the logs as they are; nothing when traces
/// are off. For what a trace needs to be searched by (conversation, project) but a log line does not.
pub fn set_attribute(span: &tracing::Span, key: &'static str, value: &str) {
    if enabled() {
        span.set_attribute(key, value.to_owned());
    }
}

/// Marks `spans` as those of a request whose signature matched: a request's spans without the
/// mark are not exported ([`super::signed_only`]). Nothing when traces are off.
pub fn mark_verified(spans: &[&tracing::Span]) {
    if enabled() {
        for span in spans {
            span.set_attribute(super::signed_only::VERIFIED, true);
        }
    }
}

/// Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not disabled.
pub fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The exporter, kept so the last spans are sent before the process exits.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends what is buffered and stops the exporter thread. Blocking work (the exporter waits
    /// for the collector), so it runs off the async threads.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_LIMIT)).await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// Installs the global subscriber with logs filtered by `logs` and spans exported over OTLP.
/// Called only when [`configured`]; an exporter that cannot be built leaves logs only.
pub fn init(format: LogFormat, logs: Targets) -> Option<Traces> {
    let provider = match provider() {
        Ok(provider) => provider,
        Err(error) => {
            let _ = tracing_subscriber::registry().with(super::log_layer(format).with_filter(logs)).try_init();
            let error = described(&error);
            tracing::error!(%error, "traces are off: the OTLP exporter could not be built");
            return None;
        }
    };
    let tracer = provider.tracer("polyai-relay");
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Thread names and ids, code locations, targets and idle/busy times say nothing about a webhook.
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(exported());
    // Trace-only spans stay out of the logs; everything else is as `RUST_LOG` says.
    let logs = logs.and(filter_fn(|meta: &Metadata<'_>| !(meta.is_span() && meta.target() == TARGET)));
    let installed =
        tracing_subscriber::registry().with(super::log_layer(format).with_filter(logs)).with(spans).try_init();
    if installed.is_err() {
        // A subscriber was installed already (tests in one process): export nothing.
        let _ = provider.shutdown();
        return None;
    }
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!("exporting traces over OTLP/HTTP");
    Some(Traces { provider })
}

/// Why the exporter could not be built, without the value the library quotes: an endpoint can
/// carry credentials (`https://user:key@collector`), and its error quotes it whole.
fn described(error: &opentelemetry_otlp::ExporterBuildError) -> String {
    match error {
        opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(message) => {
            let setting = message.split_once(':').map_or("a setting", |(setting, _)| setting);
            format!("{setting} is not valid (its value is not shown: it can hold credentials)")
        }
        other => other.to_string(),
    }
}

/// What is exported: the relay's own spans and events, whatever `RUST_LOG` says for the logs.
/// Dependencies' spans (hyper, lapin) and the SDK's own logs are left out, so an export never
/// produces spans about itself.
fn exported() -> Targets {
    Targets::new().with_target("polyai_relay", LevelFilter::INFO)
}

fn provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    // The endpoint, headers, timeout and protocol come from the OTEL_EXPORTER_OTLP_* variables.
    // The exporter builds its own (blocking) reqwest client, which needs the TLS provider.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(export_client()?)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()?;
    let mut resource = Resource::builder();
    if !service_name_configured() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    // The batch processor exports from a thread of its own, every OTEL_BSP_SCHEDULE_DELAY (5 s)
    // or sooner when a batch fills; a full queue drops spans rather than slowing webhooks.
    let batch = BatchSpanProcessor::builder(Reported::new(exporter)).build();
    Ok(SdkTracerProvider::builder().with_span_processor(SignedOnly::new(batch)).with_resource(resource.build()).build())
}

/// The exporter's HTTP client: the blocking reqwest client the exporter would build for itself,
/// but following no redirect. `OTEL_EXPORTER_OTLP_HEADERS` usually carries a vendor's API key,
/// and reqwest strips only `Authorization` and cookies when it follows one: a 30x from the
/// collector, or from anything in front of it, would send the key to whatever host it names.
fn export_client() -> Result<reqwest::blocking::Client, opentelemetry_otlp::ExporterBuildError> {
    crate::http_client::install_tls_provider();
    let build = || {
        reqwest::blocking::Client::builder()
            .timeout(export_timeout())
            .redirect(reqwest::redirect::Policy::none())
            .build()
    };
    // On a thread of its own, as the exporter builds its client: a blocking client must not be
    // built (nor dropped) on an async thread, and `init` runs on one.
    let built = std::thread::scope(|scope| scope.spawn(build).join());
    let failed = |why: String| opentelemetry_otlp::ExporterBuildError::InternalFailure(why);
    built
        .map_err(|_| failed("building the OTLP HTTP client panicked".into()))?
        .map_err(|error| failed(format!("the OTLP HTTP client could not be built: {error}")))
}

/// Each export's time limit, read as the exporter reads it for a client of its own:
/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds; 10 s.
fn export_timeout() -> Duration {
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

fn service_name_configured() -> bool {
    std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|v| v.split(',').any(|kv| kv.trim().starts_with("service.name=")))
}
