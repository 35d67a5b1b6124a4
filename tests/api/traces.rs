//! Traces (design §13): the real binary exports to a fake collector; one webhook is one trace
//! from the receiver's span through the queue to the worker's and on to the record.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    http::{header::LOCATION, HeaderMap, StatusCode},
    response::IntoResponse,
    Router,
};

use lapin::{options::BasicPublishOptions, types::FieldTable, BasicProperties};
use polyai_relay::{config::EventTypes, telemetry::trace_context};
use polyai_relay_devtools::sender::{signed_post, SendScheme};
use secrecy::SecretString;

use crate::{
    backend::{Backend, TestQueue},
    broker::MESSAGE_WAIT,
    fake_otlp::{FakeCollector, Span},
    fake_polyai::{FakePolyai, Reply, API_KEY},
    helpers::{completed, header, http, post_event, PREVIOUS_SECRET, SECRET},
    process::{as_refs, RelayProcess},
};

/// A relay process (`run`) on `queue` and `polyai`, exporting to `collector` when it is given.
struct Traced {
    relay: RelayProcess,
    queue: TestQueue,
    polyai: FakePolyai,
    collector: FakeCollector,
}

impl Traced {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, true, &[]).await
    }

    async fn start_with(backend: Backend, export: bool, extra: &[(&str, &str)]) -> Self {
        let queue = TestQueue::new(backend, EventTypes::Only(vec!["conversation.completed".into()])).await;
        let polyai = FakePolyai::start().await;
        let collector = FakeCollector::start().await;
        let mut env = queue.relay_env(
            &polyai.base_url,
            // Short retries and a quick export: the test waits on spans, not on the 5 s default.
            &[
                ("RELAY_RETRY_BASE_DELAY", "50ms"),
                ("RELAY_RETRY_MAX_DELAY", "200ms"),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ],
        );
        if export {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint.clone()));
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env = as_refs(&env);
        let relay = RelayProcess::spawn(&["run"], &env).await;
        relay.wait_ready().await;
        Self { relay, queue, polyai, collector }
    }

    /// Posts a signed `conversation.completed` about `CA{id}` and expects a 204.
    async fn post(&self, id: &str) {
        let (_, status) = post_event(&http(), &self.relay.url("/polyai-events"), id.to_owned()).await;
        assert_eq!(status, Some(204), "{}", self.relay.logs());
    }

    /// Waits for the spans of a webhook whose worker ended with `outcome`.
    async fn trace_ending(&self, outcome: &str) -> Vec<Span> {
        self.collector
            .wait_for(&format!("a webhook and an `event` span ending {outcome}"), |spans| {
                let ended = spans.iter().find(|s| s.name == "event" && s.attribute("outcome") == Some(outcome));
                let ack = ended.is_some_and(|e| spans.iter().any(|s| s.name == "ack" && s.trace_id == e.trace_id));
                ack && spans.iter().any(|s| s.name == "webhook")
            })
            .await
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one `{name}` span expected: {spans:#?}");
    found[0]
}

/// The publish span of `destination`.
fn publish<'a>(spans: &'a [Span], destination: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == "publish" && s.attribute("destination") == Some(destination))
        .unwrap_or_else(|| panic!("no publish to {destination}: {spans:#?}"))
}

fn parent_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).expect("a traceparent names its parent span")
}

#[tokio::test]
async fn a_signed_webhook_is_one_trace_from_the_receiver_to_the_record() {
    let app = Traced::start(Backend::Amqp).await;
    app.post("evt-trace").await;
    let record = app.queue.next_record().await;
    let spans = app.trace_ending("enriched").await;

    let webhook = one(&spans, "webhook");
    assert_eq!(webhook.parent_span_id, "", "the webhook starts the trace");
    assert_eq!(webhook.service, "polyai-relay");
    assert_eq!(webhook.attribute("event_id"), Some("evt-trace"));
    assert_eq!(webhook.attribute("event_type"), Some("conversation.completed"));
    assert_eq!(webhook.attribute("conversation_id"), Some("CAevt-trace"));
    assert_eq!(webhook.attribute("project"), Some("default"));
    assert_eq!(webhook.attribute("outcome"), Some("accepted"));
    let trace = &webhook.trace_id;
    for span in &spans {
        assert_eq!(&span.trace_id, trace, "every span of the call is in one trace: {span:#?}");
    }
    assert_eq!(one(&spans, "verify").parent_span_id, webhook.span_id);
    let enqueue = publish(&spans, "events");
    assert_eq!(enqueue.parent_span_id, webhook.span_id);
    assert_eq!(enqueue.attribute("result"), Some("ack"));

    // The worker continues from the receiver's publish, through the raw event's `traceparent`.
    let event = one(&spans, "event");
    assert_eq!(event.parent_span_id, enqueue.span_id);
    assert_eq!(event.attribute("conversation_id"), Some("CAevt-trace"));
    assert_eq!(event.attribute("project"), Some("default"), "the project the webhook came to");
    assert_eq!(event.attribute("polyai.project_id"), Some(crate::fake_polyai::PROJECT));
    let fetch = one(&spans, "fetch");
    assert_eq!((fetch.attribute("attempt"), fetch.attribute("status")), (Some("1"), Some("200")));
    assert_eq!(fetch.parent_span_id, event.span_id);
    let record_publish = publish(&spans, "conversations");
    assert_eq!(record_publish.parent_span_id, event.span_id);
    assert_eq!(one(&spans, "ack").parent_span_id, event.span_id);

    // The record names the trace, with the worker's publish as the parent a consumer continues.
    let traceparent = header(record.delivery.as_ref().unwrap(), trace_context::TRACEPARENT).expect("traceparent");
    assert_eq!(trace_context::trace_id(&traceparent), Some(trace.as_str()));
    assert_eq!(parent_of(&traceparent), record_publish.span_id);
}

#[tokio::test]
async fn the_trace_survives_a_retry_through_a_delay_queue() {
    let app = Traced::start(Backend::Amqp).await;
    app.polyai.script([Reply::Status(503)]);
    app.post("evt-retried").await;
    let record = app.queue.next_record().await;
    let spans = app.trace_ending("enriched").await;

    let trace = &one(&spans, "webhook").trace_id;
    let traceparent = header(record.delivery.as_ref().unwrap(), trace_context::TRACEPARENT).expect("traceparent");
    assert_eq!(trace_context::trace_id(&traceparent), Some(trace.as_str()), "the record is in the webhook's trace");

    // Each attempt is a child of the publish that scheduled it: the wait in the delay queue is
    // the gap between the retry's publish and the next `event`.
    let retry = publish(&spans, "retry");
    assert_eq!(&retry.trace_id, trace);
    let events = named(&spans, "event");
    assert_eq!(events.len(), 2, "{spans:#?}");
    let first = events.iter().find(|e| e.attribute("outcome") == Some("retried")).expect("a retried attempt");
    let second = events.iter().find(|e| e.attribute("outcome") == Some("enriched")).expect("an enriched attempt");
    assert_eq!(retry.parent_span_id, first.span_id);
    assert_eq!(second.parent_span_id, retry.span_id);
    assert_eq!(&second.trace_id, trace);
    let mut fetches: Vec<_> = named(&spans, "fetch")
        .iter()
        .map(|f| (f.attribute("attempt").unwrap(), f.attribute("status").unwrap()))
        .collect();
    fetches.sort();
    assert_eq!(fetches, [("1", "503"), ("2", "200")]);
}

#[tokio::test]
async fn no_secret_or_body_appears_in_any_span() {
    let app = Traced::start(Backend::Amqp).await;
    app.polyai.script([Reply::Status(500)]);
    app.post("evt-private").await;
    app.queue.next_record().await;
    let spans = app.trace_ending("enriched").await;
    let webhook_body = completed("CAevt-private");
    let conversation = crate::fake_polyai::conversation("CAevt-private").to_string();
    // Bits of the conversation a body would carry: caller's number, transcript fields.
    let forbidden = [SECRET, PREVIOUS_SECRET, API_KEY, &webhook_body, "+447700900123", "user_input", "turns"];
    assert!(conversation.contains("+447700900123") && conversation.contains("user_input"));
    for span in &spans {
        let texts = span.attributes.iter().chain(span.events.iter().flatten());
        for (key, value) in texts {
            for secret in forbidden {
                assert!(!value.contains(secret) && !key.contains(secret), "`{secret}` in {}.{key}: {value}", span.name);
            }
        }
    }
}

#[tokio::test]
async fn a_request_whose_signature_does_not_match_leaves_no_span() {
    let app = Traced::start(Backend::Amqp).await;
    let (client, url) = (http(), app.relay.url("/polyai-events"));
    // Anyone's requests: unsigned, and signed with a key that is not the secret.
    let unsigned = client.post(&url).body(completed("CAunsigned")).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let wrong_key = SecretString::from("whsec_not_the_secret");
    let forged = signed_post(&client, &url, &wrong_key, SendScheme::Timestamped, "evt-forged", completed("CAforged"));
    assert_eq!(forged.send().await.unwrap().status(), 401);
    // Then PolyAI's. Spans are exported in the order they end: theirs would be in by now.
    app.post("evt-signed").await;
    app.queue.next_record().await;
    let spans = app.trace_ending("enriched").await;
    let webhooks = named(&spans, "webhook");
    assert_eq!(webhooks.len(), 1, "the signed webhook's only: {webhooks:#?}");
    assert_eq!(named(&spans, "verify").len(), 1, "{spans:#?}");
    assert_eq!(webhooks[0].attribute("event_id"), Some("evt-signed"));
}

#[tokio::test]
async fn a_dead_letter_names_its_trace_without_continuing_it() {
    let app = Traced::start(Backend::Amqp).await;
    app.polyai.always(Reply::Status(400));
    app.post("evt-dead").await;
    let broker = app.queue.broker();
    let dead = broker.next_message(&broker.topology.dead_queue).await;
    let spans = app.trace_ending("dead_lettered").await;
    let trace = &one(&spans, "webhook").trace_id;
    // A replay copies the dead letter's headers: without `traceparent` it starts a new trace.
    assert_eq!(header(&dead, trace_context::TRACEPARENT), None);
    let reference = header(&dead, trace_context::DEAD_LETTER_TRACE).expect("the trace it ended");
    assert_eq!(trace_context::trace_id(&reference), Some(trace.as_str()));
    assert_eq!(parent_of(&reference), publish(&spans, "dead").span_id);
}

#[tokio::test]
async fn an_event_without_traceparent_starts_a_trace_of_its_own() {
    // What a backfill, a reconcile or a replay puts in the worker's queue: no trace context.
    let app = Traced::start(Backend::Amqp).await;
    let broker = app.queue.broker();
    let properties = BasicProperties::default()
        .with_message_id("evt-untraced".into())
        .with_type("conversation.completed".into())
        .with_headers(FieldTable::default());
    broker
        .channel()
        .await
        .basic_publish(
            broker.topology.events_exchange.as_str().into(),
            "conversation.completed".into(),
            BasicPublishOptions::default(),
            completed("CAuntraced").as_bytes(),
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let record = app.queue.next_record().await;
    let spans = app
        .collector
        .wait_for("the worker's spans", |spans| {
            spans.iter().any(|s| s.name == "event") && spans.iter().any(|s| s.name == "ack")
        })
        .await;
    let event = one(&spans, "event");
    assert_eq!(event.parent_span_id, "", "a new root");
    assert!(named(&spans, "webhook").is_empty());
    let traceparent = header(record.delivery.as_ref().unwrap(), trace_context::TRACEPARENT).expect("traceparent");
    assert_eq!(trace_context::trace_id(&traceparent), Some(event.trace_id.as_str()));
}

#[tokio::test]
async fn the_trace_crosses_the_embedded_queue_too() {
    let app = Traced::start(Backend::Embedded).await;
    app.post("evt-embedded").await;
    app.queue.next_record().await;
    let spans = app.trace_ending("enriched").await;
    let webhook = one(&spans, "webhook");
    let event = one(&spans, "event");
    assert_eq!(event.trace_id, webhook.trace_id);
    assert_eq!(event.parent_span_id, publish(&spans, "events").span_id);
}

#[tokio::test]
async fn with_traces_off_no_exporter_runs_and_no_trace_context_is_written() {
    let app = Traced::start_with(Backend::Amqp, false, &[]).await;
    app.post("evt-off").await;
    let record = app.queue.next_record().await;
    assert_eq!(header(record.delivery.as_ref().unwrap(), trace_context::TRACEPARENT), None);
    assert_eq!(exporter_threads(&app.relay), 0, "no exporter thread when traces are off");
    assert!(app.collector.spans().is_empty());

    // The same relay with an endpoint runs the exporter's thread: the check above can fail.
    let on = Traced::start(Backend::Amqp).await;
    assert_eq!(exporter_threads(&on.relay), 1);
}

#[tokio::test]
async fn an_endpoint_the_exporter_cannot_use_is_reported_without_its_credentials() {
    // From a file-made Kubernetes secret: the line end makes it no URL.
    let endpoint = "http://relay:s3cr3t-otlp@collector.example:4318\n";
    let app = Traced::start_with(Backend::Amqp, false, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).await;
    let logs = app.relay.logs();
    assert!(logs.contains("traces are off") && logs.contains("OTEL_EXPORTER_OTLP_ENDPOINT is not valid"), "{logs}");
    assert!(!logs.contains("s3cr3t"), "{logs}");
    assert_eq!(exporter_threads(&app.relay), 0);
}

#[tokio::test]
async fn log_lines_keep_the_event_span_when_traces_are_on() {
    // Debug logs of the HTTP client are written inside the trace-only `fetch` span.
    let app = Traced::start_with(Backend::Amqp, true, &[("RUST_LOG", "info,hyper_util=debug")]).await;
    app.post("evt-logged").await;
    app.queue.next_record().await;
    app.trace_ending("enriched").await;
    let lines: Vec<serde_json::Value> =
        app.relay.logs().lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let span_of = |line: &serde_json::Value| line["span"]["name"].as_str().map(str::to_owned);
    let client_lines: Vec<_> = lines
        .iter()
        .filter(|line| line["target"].as_str().is_some_and(|t| t.starts_with("hyper_util")))
        .filter(|line| line["span"]["event_id"] == "evt-logged")
        .collect();
    assert!(!client_lines.is_empty(), "the HTTP client logged inside the event's span: {}", app.relay.logs());
    for line in &lines {
        let span = span_of(line);
        assert!(
            span.is_none() || matches!(span.as_deref(), Some("webhook" | "event")),
            "a log line shows a trace-only span: {line}"
        );
    }
}

#[tokio::test]
async fn a_collector_that_redirects_never_gets_the_exporters_headers_sent_elsewhere() {
    const COLLECTOR_KEY: &str = "collector-key-never-redirected-51c0";
    let trap = Trap::start().await;
    let redirector = Answering::redirecting(&trap.endpoint).await;
    let headers = format!("x-collector-key={COLLECTOR_KEY}");
    let extra =
        [("OTEL_EXPORTER_OTLP_ENDPOINT", redirector.endpoint.as_str()), ("OTEL_EXPORTER_OTLP_HEADERS", &headers)];
    let app = Traced::start_with(Backend::Amqp, false, &extra).await;

    // The exporter sends one batch at a time, so a second export reaching the redirector means
    // the first one, and any redirect it would have followed, is over.
    app.post("evt-redirected-1").await;
    redirector.wait_for_exports(1).await;
    app.post("evt-redirected-2").await;
    redirector.wait_for_exports(2).await;

    assert_eq!(trap.caught(), Vec::<String>::new(), "the exporter followed the collector's redirect");
    assert!(!app.relay.logs().contains(COLLECTOR_KEY), "{}", app.relay.logs());
}

#[tokio::test]
async fn a_collector_that_refuses_every_export_is_reported_once_not_per_batch() {
    let collector = Answering::refusing().await;
    let app =
        Traced::start_with(Backend::Amqp, false, &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str())]).await;
    // One batch at a time, each refused: three exports are three failures.
    for (i, exports) in (1..=3).enumerate() {
        app.post(&format!("evt-refused-{i}")).await;
        collector.wait_for_exports(exports).await;
    }
    // The third failure's line, were it written, is written when its export returns: a fourth
    // export starting means the third has returned.
    app.post("evt-refused-3").await;
    collector.wait_for_exports(4).await;
    let logs = app.relay.logs();
    assert_eq!(logs.matches("spans could not be exported to the OTLP collector").count(), 1, "{logs}");
    assert!(logs.contains("401"), "the reason is given: {logs}");
    let sdk_lines = logs.lines().filter(|line| line.contains(r#""target":"opentelemetry"#)).count();
    assert_eq!(sdk_lines, 0, "{logs}");
}

/// A collector that answers every export alike, and counts them.
struct Answering {
    endpoint: String,
    exports: tokio::sync::watch::Receiver<usize>,
}

impl Answering {
    /// `307` to `target`: the exporter must not follow.
    async fn redirecting(target: &str) -> Self {
        let location = format!("{target}/v1/traces");
        Self::start(move || (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, location.clone())]).into_response()).await
    }

    /// `401`, as a collector does for a vendor key that expired.
    async fn refusing() -> Self {
        Self::start(|| StatusCode::UNAUTHORIZED.into_response()).await
    }

    async fn start(answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static) -> Self {
        let (count, exports) = tokio::sync::watch::channel(0);
        let app = Router::new().fallback(move || {
            count.send_modify(|n| *n += 1);
            let response = answer();
            async move { response }
        });
        Self { endpoint: serve(app).await, exports }
    }

    async fn wait_for_exports(&self, at_least: usize) {
        let mut exports = self.exports.clone();
        tokio::time::timeout(MESSAGE_WAIT, exports.wait_for(|n| *n >= at_least))
            .await
            .unwrap_or_else(|_| panic!("fewer than {at_least} exports reached the collector"))
            .unwrap();
    }
}

/// Where the redirect points: records the headers of every request it gets.
struct Trap {
    endpoint: String,
    caught: Arc<Mutex<Vec<String>>>,
}

impl Trap {
    async fn start() -> Self {
        let caught = Arc::new(Mutex::new(Vec::new()));
        let seen = caught.clone();
        let app = Router::new().fallback(move |headers: HeaderMap| {
            seen.lock().unwrap().push(format!("{headers:?}"));
            async { StatusCode::OK }
        });
        Self { endpoint: serve(app).await, caught }
    }

    fn caught(&self) -> Vec<String> {
        self.caught.lock().unwrap().clone()
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

/// Threads of the process named like the SDK's batch exporter (Linux truncates names to 15 bytes).
fn exporter_threads(relay: &RelayProcess) -> usize {
    let pid = relay.child.id().expect("running");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc is readable");
    let names: BTreeMap<String, usize> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .fold(BTreeMap::new(), |mut names, name| {
            *names.entry(name.trim().to_owned()).or_default() += 1;
            names
        });
    names.iter().filter(|(name, _)| name.starts_with("OpenTelemetry")).map(|(_, n)| n).sum()
}
