//! A fake OpenTelemetry collector on port 0: takes OTLP/HTTP protobuf on `/v1/traces`, as the
//! relay's exporter sends it, and keeps the spans for tests to wait on.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::StatusCode, routing::post, Router};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{any_value::Value, KeyValue},
};
use prost::Message;
use tokio::sync::Notify;

use crate::broker::MESSAGE_WAIT;

/// One exported span, with ids as lowercase hex (as `traceparent` writes them).
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub service: String,
    pub attributes: BTreeMap<String, String>,
    /// Log events recorded in the span: their attributes (the message is under `message`).
    pub events: Vec<BTreeMap<String, String>>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<Span>>,
    arrived: Notify,
}

pub struct FakeCollector {
    /// For `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter appends `/v1/traces`).
    pub endpoint: String,
    received: Arc<Received>,
}

impl FakeCollector {
    pub async fn start() -> Self {
        let received = Arc::new(Received::default());
        let app = Router::new().route("/v1/traces", post(export)).with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { endpoint, received }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.spans.lock().unwrap().clone()
    }

    /// Waits until the spans received so far satisfy `done`; fails the test after [`MESSAGE_WAIT`].
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + MESSAGE_WAIT;
        loop {
            let arrived = self.received.arrived.notified();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "never received {what}; spans: {:#?}", names(&spans));
            let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), arrived).await;
        }
    }
}

fn names(spans: &[Span]) -> Vec<(&str, &str)> {
    spans.iter().map(|s| (s.name.as_str(), s.trace_id.as_str())).collect()
}

async fn export(State(received): State<Arc<Received>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .map(|r| attributes(&r.attributes))
            .and_then(|a| a.get("service.name").cloned())
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name,
                    service: service.clone(),
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| {
                            let mut fields = attributes(&e.attributes);
                            fields.insert("message".into(), e.name.clone());
                            fields
                        })
                        .collect(),
                });
            }
        }
    }
    received.spans.lock().unwrap().extend(spans);
    received.arrived.notify_waiters();
    (StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}
