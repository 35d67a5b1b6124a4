//! Only webhooks are traced: the spans of a request whose signature did not match (or that never
//! got as far as a signature) are dropped before export. Anyone can send such requests, as fast
//! as they like, and the exporter's queue is bounded: their spans would push out those of
//! PolyAI's webhooks (design §10: no client without the secret takes capacity from one with it).

use std::time::Duration;

use opentelemetry::{Context, Value};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanProcessor},
    Resource,
};

/// The attribute on a request's own spans once its signature matched (see [`super::traces::mark_verified`]).
pub const VERIFIED: &str = "polyai.verified";

/// The spans every request has, before its signature is checked or while it is.
const REQUEST_SPANS: [&str; 2] = ["webhook", "verify"];

/// Passes on to `next` every span but a request's own spans without [`VERIFIED`].
#[derive(Debug)]
pub struct SignedOnly<P> {
    next: P,
}

impl<P> SignedOnly<P> {
    pub fn new(next: P) -> Self {
        Self { next }
    }
}

fn unsigned(span: &SpanData) -> bool {
    REQUEST_SPANS.contains(&span.name.as_ref())
        && !span.attributes.iter().any(|kv| kv.key.as_str() == VERIFIED && kv.value == Value::Bool(true))
}

impl<P: SpanProcessor> SpanProcessor for SignedOnly<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.next.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !unsigned(&span) {
            self.next.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.next.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}
