//! Signs and POSTs events the way PolyAI does: a test tool, and a load generator that reports
//! throughput and latency percentiles.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use polyai_relay::{signature::sign, worker::Throttle};

mod plain;
use plain::PlainConnection;

/// How long one request may take, connecting included, before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which signed message to send; the docs disagree (design §7), so both exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendScheme {
    /// `HMAC(secret, "{X-PolyAI-Timestamp}.{body}")`, the Webhooks reference.
    Timestamped,
    /// `HMAC(secret, body)`, the API quickstart.
    Body,
}

/// The headers PolyAI sends with a delivery, signed and timestamped now: `X-PolyAI-Timestamp`,
/// `X-PolyAI-Signature`, `X-PolyAI-Event-ID`.
pub struct SignedHeaders {
    timestamp: String,
    signature: String,
    event_id: String,
}

impl SignedHeaders {
    pub fn new(secret: &SecretString, scheme: SendScheme, event_id: &str, body: &[u8]) -> Self {
        let timestamp =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default().to_string();
        let signed_timestamp = (scheme == SendScheme::Timestamped).then_some(timestamp.as_str());
        let signature = sign(secret.expose_secret().as_bytes(), signed_timestamp, body);
        SignedHeaders { timestamp, signature, event_id: event_id.to_owned() }
    }

    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("x-polyai-timestamp", &self.timestamp),
            ("x-polyai-signature", &self.signature),
            ("x-polyai-event-id", &self.event_id),
        ]
    }
}

/// A POST of `body` signed the way PolyAI signs deliveries, timestamped now.
pub fn signed_post(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    secret: &SecretString,
    scheme: SendScheme,
    event_id: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let signed = SignedHeaders::new(secret, scheme, event_id, body.as_bytes());
    let mut request = http.post(url).header("content-type", "application/json");
    for (name, value) in signed.pairs() {
        request = request.header(name, value);
    }
    request.body(body)
}

#[derive(Debug, Clone)]
pub struct SendConfig {
    pub url: String,
    pub secret: SecretString,
    pub scheme: SendScheme,
    pub event_type: String,
    /// Fixed conversation id; `None` gives each event a fresh one.
    pub conversation_id: Option<String>,
    pub environment: String,
    pub count: usize,
    /// Stop after this long even if `count` is not reached (load tests run for a duration).
    pub duration: Option<Duration>,
    pub concurrency: usize,
    /// Requests per second across all connections; `None` as fast as answers come.
    pub rate: Option<f64>,
    /// Pads each body to about this many bytes (for load tests with realistic sizes).
    pub body_size: Option<usize>,
}

/// The first request of a run, with its ids (a single send prints them).
#[derive(Debug, Clone)]
pub struct Sent {
    pub event_id: String,
    pub conversation_id: String,
    /// HTTP status, or `None` when no answer came (connection refused, reset, timeout).
    pub status: Option<u16>,
    pub latency: Duration,
}

/// What a run keeps of each request: 8 bytes, so that a long run at 100,000 requests a second
/// stays small (with each request's ids and a `Duration`, 20 s took 660 MB).
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// HTTP status, or `None` when no answer came.
    pub status: Option<u16>,
    pub latency_us: u32,
}

impl Outcome {
    fn new(status: Option<u16>, latency: Duration) -> Self {
        Outcome { status, latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX) }
    }
}

/// The totals of a run.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub outcomes: Vec<Outcome>,
    /// The run's first request; `None` when none was sent.
    pub first: Option<Sent>,
    /// Why a request got no answer, for the first one that got none: the runs' `error` count
    /// says how many, this says what happened (a refused certificate, a refused connection).
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl SendReport {
    pub fn status_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for outcome in &self.outcomes {
            let key = outcome.status.map(|s| s.to_string()).unwrap_or_else(|| "error".into());
            *counts.entry(key).or_default() += 1;
        }
        counts
    }

    pub fn all_succeeded(&self) -> bool {
        self.outcomes.iter().all(|o| o.status.is_some_and(|code| (200..300).contains(&code)))
    }

    pub fn requests_per_second(&self) -> f64 {
        self.outcomes.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `quantile` (0..=1) of requests completed (nearest rank).
    pub fn latency(&self, quantile: f64) -> Duration {
        let mut latencies: Vec<u32> = self.outcomes.iter().map(|o| o.latency_us).collect();
        latencies.sort_unstable();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((quantile * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        Duration::from_micros(latencies[rank - 1].into())
    }

    /// A few lines for a terminal: throughput, statuses, latency percentiles, and why requests
    /// got no answer when some did not.
    pub fn summary(&self) -> String {
        let statuses: Vec<String> = self.status_counts().iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let first_error = self.first_error.as_ref().map(|e| format!("\nfirst error: {e}")).unwrap_or_default();
        format!(
            "requests: {} in {:.2}s ({:.1} req/s)\nstatuses: {}\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}{}",
            self.outcomes.len(),
            self.elapsed.as_secs_f64(),
            self.requests_per_second(),
            statuses.join(", "),
            ms(self.latency(0.50)),
            ms(self.latency(0.90)),
            ms(self.latency(0.99)),
            ms(self.latency(1.0)),
            first_error,
        )
    }
}

/// A fresh id's 32 hex digits: a version-4 UUID from the thread's generator rather than the
/// system's, which costs a system call per id (a load run makes two per request).
fn random_hex_id() -> uuid::fmt::Simple {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().simple()
}

fn random_conversation_id() -> String {
    format!("CA{}", random_hex_id())
}

/// The body PolyAI's quickstart describes: `{type, data: {conversation_id, environment}}`.
pub fn event_body(event_type: &str, conversation_id: &str, environment: &str, size: Option<usize>) -> String {
    let mut body = json!({
        "type": event_type,
        "data": {"conversation_id": conversation_id, "environment": environment},
    });
    if let Some(size) = size {
        let current = body.to_string().len();
        let padding = size.saturating_sub(current + r#","padding":"""#.len());
        body["data"]["padding"] = json!("x".repeat(padding));
    }
    body.to_string()
}

/// A run's bodies, alike but for the conversation id: the JSON is built once and each request
/// only puts its id in, so that a load run spends its CPU on requests rather than on JSON.
#[derive(Debug)]
enum Bodies {
    /// `--conversation-id` given: every event carries that id and the same body.
    Same { id: String, body: String },
    /// The body around a fresh conversation id (a random id's length, so the padding holds).
    Around { head: String, tail: String },
}

impl Bodies {
    fn new(config: &SendConfig) -> Self {
        if let Some(id) = &config.conversation_id {
            let body = event_body(&config.event_type, id, &config.environment, config.body_size);
            return Bodies::Same { id: id.clone(), body };
        }
        let placeholder = format!("CA{}", uuid::Uuid::nil().simple());
        let body = event_body(&config.event_type, &placeholder, &config.environment, config.body_size);
        // The key and its value, unescaped: only the key itself can match, since a quote inside
        // any other string of the body is escaped.
        let field = format!(r#""conversation_id":"{placeholder}""#);
        let at = body.find(&field).expect("the conversation id is in the body") + field.len() - placeholder.len() - 1;
        Bodies::Around { head: body[..at].to_owned(), tail: body[at + placeholder.len()..].to_owned() }
    }

    /// A new event's conversation id and body.
    fn next(&self) -> (String, String) {
        match self {
            Bodies::Same { id, body } => (id.clone(), body.clone()),
            Bodies::Around { head, tail } => {
                let id = random_conversation_id();
                let mut body = String::with_capacity(head.len() + id.len() + tail.len());
                body.extend([head.as_str(), &id, tail.as_str()]);
                (id, body)
            }
        }
    }
}

/// How a worker reaches the URL: a connection of its own for plain `http://`, reqwest otherwise.
enum Client {
    Plain(PlainConnection),
    Reqwest(reqwest::Client, reqwest::Url),
}

impl Client {
    /// The same way to the URL for another worker: its own connection, or reqwest's shared pool.
    fn for_worker(&self) -> Client {
        match self {
            Client::Plain(connection) => Client::Plain(connection.unopened()),
            Client::Reqwest(http, url) => Client::Reqwest(http.clone(), url.clone()),
        }
    }

    /// The answer's status, or why none came.
    async fn post(&mut self, config: &SendConfig, event_id: &str, body: String) -> Result<u16, String> {
        match self {
            Client::Plain(connection) => {
                let signed = SignedHeaders::new(&config.secret, config.scheme, event_id, body.as_bytes());
                connection.post(signed, body).await
            }
            Client::Reqwest(http, url) => {
                let request = signed_post(http, url.clone(), &config.secret, config.scheme, event_id, body);
                // Without the URL, which may carry credentials; with each cause, where the reason is.
                request.send().await.map(|response| response.status().as_u16()).map_err(|e| causes(&e.without_url()))
            }
        }
    }
}

/// An error and its causes, outermost first: `error sending request: … : invalid peer certificate`.
pub(crate) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends `config.count` signed events and reports on each.
pub async fn send(config: SendConfig) -> anyhow::Result<SendReport> {
    // Parsed once: reqwest would parse a string again for every request.
    let url = reqwest::Url::parse(&config.url).map_err(|e| anyhow::anyhow!("--url {}: {e}", config.url))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https"),
        "--url {}: an http:// or https:// URL, not {}://",
        config.url,
        url.scheme()
    );
    let client = match PlainConnection::for_url(&url) {
        Some(connection) => Client::Plain(connection),
        None => Client::Reqwest(polyai_relay::http_client::builder().timeout(REQUEST_TIMEOUT).build()?, url),
    };
    let bodies = Arc::new(Bodies::new(&config));
    let config = Arc::new(config);
    let next = Arc::new(AtomicUsize::new(0));
    let throttle = Arc::new(Throttle::new(config.rate));
    let started = Instant::now();
    let stop_at = config.duration.map(|d| started + d);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let mut client = client.for_worker();
        let (bodies, config, next, throttle) = (bodies.clone(), config.clone(), next.clone(), throttle.clone());
        tasks.spawn(async move {
            let (mut outcomes, mut first, mut first_error) = (Vec::new(), None, None);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.count {
                    break;
                }
                throttle.acquire().await;
                if stop_at.is_some_and(|at| Instant::now() >= at) {
                    break;
                }
                let (conversation_id, body) = bodies.next();
                let event_id = format!("evt_{}", random_hex_id());
                let started = Instant::now();
                let answer = client.post(&config, &event_id, body).await;
                let latency = started.elapsed();
                let status = match answer {
                    Ok(status) => Some(status),
                    Err(error) => {
                        first_error.get_or_insert(error);
                        None
                    }
                };
                outcomes.push(Outcome::new(status, latency));
                if index == 0 {
                    first = Some(Sent { event_id, conversation_id, status, latency });
                }
            }
            (outcomes, first, first_error)
        });
    }
    let (mut outcomes, mut first, mut first_error) = (Vec::with_capacity(config.count.min(4096)), None, None);
    while let Some(result) = tasks.join_next().await {
        let (worker_outcomes, worker_first, worker_error) = result?;
        outcomes.extend(worker_outcomes);
        first = first.or(worker_first);
        first_error = first_error.or(worker_error);
    }
    Ok(SendReport { outcomes, first, first_error, elapsed: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(latencies_ms: &[u64]) -> SendReport {
        let outcomes = latencies_ms.iter().map(|ms| Outcome::new(Some(204), Duration::from_millis(*ms))).collect();
        SendReport { outcomes, first: None, first_error: None, elapsed: Duration::from_secs(1) }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let r = report(&(1..=100).collect::<Vec<_>>());
        assert_eq!(r.latency(0.5), Duration::from_millis(50));
        assert_eq!(r.latency(0.99), Duration::from_millis(99));
        assert_eq!(r.latency(1.0), Duration::from_millis(100));
        assert_eq!(report(&[]).latency(0.5), Duration::ZERO);
        assert_eq!(r.requests_per_second(), 100.0);
    }

    #[test]
    fn bodies_are_padded_to_about_the_size_asked() {
        let body = event_body("conversation.completed", "CA1", "live", Some(600));
        assert!((598..=602).contains(&body.len()), "{}", body.len());
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["data"]["conversation_id"], "CA1");
    }

    fn config(conversation_id: Option<&str>, environment: &str) -> SendConfig {
        SendConfig {
            url: "http://127.0.0.1:1/polyai-events".into(),
            secret: SecretString::from("whsec_test"),
            scheme: SendScheme::Timestamped,
            event_type: "conversation.completed".into(),
            conversation_id: conversation_id.map(str::to_owned),
            environment: environment.into(),
            count: 1,
            duration: None,
            concurrency: 1,
            rate: None,
            body_size: Some(600),
        }
    }

    #[test]
    fn each_event_of_a_run_gets_its_own_conversation_in_the_body_a_fresh_build_would_give() {
        // An environment holding what the template looks for must not move the id.
        let environment = format!(r#""conversation_id":"CA{}""#, uuid::Uuid::nil().simple());
        let config = config(None, &environment);
        let bodies = Bodies::new(&config);
        let (first_id, first) = bodies.next();
        let (second_id, _) = bodies.next();
        assert_ne!(first_id, second_id);
        assert!(first_id.starts_with("CA") && first_id.len() == 34, "{first_id}");
        assert_eq!(first, event_body(&config.event_type, &first_id, &environment, config.body_size));
    }

    #[test]
    fn a_fixed_conversation_id_gives_every_event_the_same_body() {
        let config = config(Some("CA\"quoted\""), "live");
        let bodies = Bodies::new(&config);
        let (id, body) = bodies.next();
        assert_eq!(id, "CA\"quoted\"");
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["data"]["conversation_id"], "CA\"quoted\"");
        assert_eq!(bodies.next().1, body);
    }
}
