//! The exporter's failures, said by the relay, once per interval. The OpenTelemetry SDK logs each
//! failed batch itself, a warning and an error every few seconds, or several a second under load,
//! for as long as a collector refuses (an expired vendor key) or is down; its lines are kept out
//! of the logs (see `log_filter`), and this wrapper says the same once, then at most once per
//! interval with how many it did not say, as the relay does for its other outages.

use std::fmt;

use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
    Resource,
};

use crate::log_limit::LogLimit;

/// `inner`, its failed exports reported through the relay's own, rate-limited, log line.
pub struct Reported<E> {
    inner: E,
    failures: LogLimit,
}

impl<E> Reported<E> {
    pub fn new(inner: E) -> Self {
        Self { inner, failures: LogLimit::default() }
    }
}

/// Without the exporter: OTLP's shows its endpoint and `OTEL_EXPORTER_OTLP_HEADERS`, where a
/// collector's API key goes.
impl<E> fmt::Debug for Reported<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reported").finish_non_exhaustive()
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            // The exporter's errors name a status or a network failure, never the endpoint.
            if let Some(unsaid) = self.failures.admit("export") {
                tracing::warn!(%error, spans, unsaid, "spans could not be exported to the OTLP collector and were dropped");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_leaves_the_exporter_and_its_headers_out() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Exporter {
            headers: &'static str,
        }
        let shown = format!("{:?}", Reported::new(Exporter { headers: "x-api-key=s3cr3t" }));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
