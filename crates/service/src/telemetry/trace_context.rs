//! W3C trace context on queue messages: how a trace crosses RabbitMQ or the embedded queue.
//!
//! The rule: a message that carries `traceparent` continues that trace; a message without one
//! starts a new root. Only the receiver and the worker write it, so backfilled, reconciled and
//! replayed events, which carry none, each start a trace of their own. A dead letter keeps the
//! trace it ended under `x-relay-trace` rather than `traceparent`, so that an operator can find
//! it, and a replay of it, which copies its headers, still starts afresh.
//!
//! When traces are off nothing is written or read: headers pass through untouched.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::traces;

/// `{version}-{trace id}-{parent span id}-{flags}`, as W3C Trace Context defines it.
pub const TRACEPARENT: &str = "traceparent";
/// Vendor-specific trace state, handed on as received.
pub const TRACESTATE: &str = "tracestate";
/// On a dead letter: the `traceparent` of the span that dead-lettered it (a reference, not a parent).
pub const DEAD_LETTER_TRACE: &str = "x-relay-trace";

/// Writes `span`'s context into `headers` as `traceparent` (and `tracestate`), replacing what
/// the message carried, so whoever consumes it continues from `span`.
pub fn inject(span: &tracing::Span, headers: &mut BTreeMap<String, String>) {
    if !traces::enabled() {
        return;
    }
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    TraceContextPropagator::new().inject_context(&span.context(), &mut Carrier(headers));
    if headers.get(TRACESTATE).is_some_and(String::is_empty) {
        headers.remove(TRACESTATE);
    }
}

/// Makes `span` (not yet entered) a child of the trace named in `headers`; without a
/// `traceparent` (or with an unreadable one) it stays a new root.
pub fn continue_from(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    if !traces::enabled() || !headers.contains_key(TRACEPARENT) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Reader(headers));
    // Fails only for a disabled span or one already started: then it stays where it is.
    let _ = span.set_parent(parent);
}

/// Turns the trace context of a message about to be dead-lettered into a reference
/// ([`DEAD_LETTER_TRACE`]): `span`'s when traces are on, else the one it carried, if any.
pub fn for_dead_letter(span: &tracing::Span, headers: &mut BTreeMap<String, String>) {
    let carried = headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    inject(span, headers);
    if let Some(reference) = headers.remove(TRACEPARENT).or(carried) {
        headers.insert(DEAD_LETTER_TRACE.to_owned(), reference);
    }
    headers.remove(TRACESTATE);
}

/// The trace id a `traceparent` value names (32 lowercase hex digits), if it is well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then_some(trace_id)
}

struct Carrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Reader<'a>(&'a BTreeMap<String, String>);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_names_its_trace_id() {
        assert_eq!(trace_id(PARENT), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id("00-short-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id(""), None);
    }

    #[test]
    fn a_dead_letter_keeps_its_trace_as_a_reference_not_a_parent() {
        // Traces are off in unit tests: the reference is the context the message carried.
        let mut headers = BTreeMap::from([
            (TRACEPARENT.to_owned(), PARENT.to_owned()),
            (TRACESTATE.to_owned(), "vendor=1".to_owned()),
        ]);
        for_dead_letter(&tracing::Span::none(), &mut headers);
        assert_eq!(headers, BTreeMap::from([(DEAD_LETTER_TRACE.to_owned(), PARENT.to_owned())]));

        let mut untraced = BTreeMap::from([("x-relay-attempts".to_owned(), "2".to_owned())]);
        for_dead_letter(&tracing::Span::none(), &mut untraced);
        assert_eq!(untraced, BTreeMap::from([("x-relay-attempts".to_owned(), "2".to_owned())]));
    }

    #[test]
    fn headers_pass_untouched_when_traces_are_off() {
        let mut headers = BTreeMap::from([(TRACEPARENT.to_owned(), PARENT.to_owned())]);
        inject(&tracing::info_span!("publish"), &mut headers);
        assert_eq!(headers.get(TRACEPARENT).map(String::as_str), Some(PARENT));
    }
}
