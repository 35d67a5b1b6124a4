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

/// Which signed message to send; the docs disagree (design §7), so both exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendScheme {
    /// `HMAC(secret, "{X-PolyAI-Timestamp}.{body}")`, the Webhooks reference.
    Timestamped,
    /// `HMAC(secret, body)`, the API quickstart.
    Body,
}

/// A POST of `body` signed the way PolyAI signs deliveries, timestamped now: `X-PolyAI-Timestamp`,
/// `X-PolyAI-Signature`, `X-PolyAI-Event-ID`.
pub fn signed_post(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    secret: &SecretString,
    scheme: SendScheme,
    event_id: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default().to_string();
    let signed_timestamp = (scheme == SendScheme::Timestamped).then_some(timestamp.as_str());
    let signature = sign(secret.expose_secret().as_bytes(), signed_timestamp, body.as_bytes());
    http.post(url)
        .header("content-type", "application/json")
        .header("x-polyai-timestamp", timestamp)
        .header("x-polyai-signature", signature)
        .header("x-polyai-event-id", event_id)
        .body(body)
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

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Sent {
    pub event_id: String,
    pub conversation_id: String,
    /// HTTP status, or `None` when no answer came (connection refused, reset, timeout).
    pub status: Option<u16>,
    pub latency: Duration,
}

/// The totals of a run.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub sent: Vec<Sent>,
    pub elapsed: Duration,
}

impl SendReport {
    pub fn status_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for sent in &self.sent {
            let key = sent.status.map(|s| s.to_string()).unwrap_or_else(|| "error".into());
            *counts.entry(key).or_default() += 1;
        }
        counts
    }

    pub fn all_succeeded(&self) -> bool {
        self.sent.iter().all(|s| s.status.is_some_and(|code| (200..300).contains(&code)))
    }

    pub fn requests_per_second(&self) -> f64 {
        self.sent.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `quantile` (0..=1) of requests completed (nearest rank).
    pub fn latency(&self, quantile: f64) -> Duration {
        let mut latencies: Vec<Duration> = self.sent.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((quantile * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    }

    /// A few lines for a terminal: throughput, statuses, latency percentiles.
    pub fn summary(&self) -> String {
        let statuses: Vec<String> = self.status_counts().iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "requests: {} in {:.2}s ({:.1} req/s)\nstatuses: {}\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.sent.len(),
            self.elapsed.as_secs_f64(),
            self.requests_per_second(),
            statuses.join(", "),
            ms(self.latency(0.50)),
            ms(self.latency(0.90)),
            ms(self.latency(0.99)),
            ms(self.latency(1.0)),
        )
    }
}

fn random_conversation_id() -> String {
    format!("CA{}", uuid::Uuid::new_v4().simple())
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

/// Sends `config.count` signed events and reports on each.
pub async fn send(config: SendConfig) -> anyhow::Result<SendReport> {
    let http = polyai_relay::http_client::builder().timeout(Duration::from_secs(30)).build()?;
    let config = Arc::new(config);
    let next = Arc::new(AtomicUsize::new(0));
    let throttle = Arc::new(Throttle::new(config.rate));
    let started = Instant::now();
    let stop_at = config.duration.map(|d| started + d);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (http, config, next, throttle) = (http.clone(), config.clone(), next.clone(), throttle.clone());
        tasks.spawn(async move {
            let mut sent = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < config.count {
                throttle.acquire().await;
                if stop_at.is_some_and(|at| Instant::now() >= at) {
                    break;
                }
                sent.push(send_one(&http, &config).await);
            }
            sent
        });
    }
    let mut sent = Vec::with_capacity(config.count.min(4096));
    while let Some(result) = tasks.join_next().await {
        sent.extend(result?);
    }
    Ok(SendReport { sent, elapsed: started.elapsed() })
}

async fn send_one(http: &reqwest::Client, config: &SendConfig) -> Sent {
    let conversation_id = config.conversation_id.clone().unwrap_or_else(random_conversation_id);
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let body = event_body(&config.event_type, &conversation_id, &config.environment, config.body_size);
    let started = Instant::now();
    let response = signed_post(http, &config.url, &config.secret, config.scheme, &event_id, body).send().await;
    let status = response.ok().map(|r| r.status().as_u16());
    Sent { event_id, conversation_id, status, latency: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(latencies_ms: &[u64]) -> SendReport {
        let sent = latencies_ms
            .iter()
            .map(|ms| Sent {
                event_id: String::new(),
                conversation_id: String::new(),
                status: Some(204),
                latency: Duration::from_millis(*ms),
            })
            .collect();
        SendReport { sent, elapsed: Duration::from_secs(1) }
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
}
