//! The benchmark's HTTP baselines (bench/run.sh):
//!
//! - `bench_http <listen> <secret>`: bare HTTP+verify, an axum handler that reads the body,
//!   verifies the HMAC with the relay's own verifier and answers 204, with no broker, no logging
//!   and no metrics. What a webhook costs before the relay does anything of its own;
//! - `bench_http <listen> <secret> <amqp_url> <exchange> <routing_key>`: the two parts put
//!   together in the plainest way, the same handler then a confirmed publish as
//!   `bench_broker ceiling` makes it (lapin, the relay's channels and properties), 204 on the
//!   broker's ack and 503 otherwise. What a relay with nothing of its own would cost: no event
//!   parsing, duplicate check, deadline, spool, logs, spans or metrics.
//!
//! e.g. `bench_http 127.0.0.1:18082 whsec_bench`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use lapin::{Channel, Connection, ConnectionProperties};
use polyai_relay::signature::{SecretSlot, SignatureScheme, UnverifiedEvent, Verifier};
use secrecy::SecretString;

mod common;

struct Baseline {
    verifier: Verifier,
    broker: Option<Broker>,
}

/// Where the assembled baseline publishes: confirm channels taken in turn.
struct Broker {
    /// Kept open for as long as the channels are used: the whole process.
    _connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
    exchange: String,
    routing_key: String,
}

async fn receive(State(baseline): State<Arc<Baseline>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let event =
        UnverifiedEvent { body, signature: header("x-polyai-signature"), timestamp: header("x-polyai-timestamp") };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default() as i64;
    let Ok(verified) = baseline.verifier.verify(event, now) else { return StatusCode::UNAUTHORIZED };
    let Some(broker) = &baseline.broker else { return StatusCode::NO_CONTENT };
    let channel = &broker.channels[broker.next.fetch_add(1, Ordering::Relaxed) % broker.channels.len()];
    match common::publish_confirmed(channel, &broker.exchange, &broker.routing_key, verified.body()).await {
        Ok(true) => StatusCode::NO_CONTENT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, secret, broker) = match args.as_slice() {
        [listen, secret] => (listen, secret, None),
        [listen, secret, url, exchange, routing_key] => {
            let connection = Connection::connect(url, ConnectionProperties::default()).await?;
            let channels = common::confirm_channels(&connection).await?;
            let broker = Broker {
                _connection: connection,
                channels,
                next: AtomicUsize::new(0),
                exchange: exchange.clone(),
                routing_key: routing_key.clone(),
            };
            (listen, secret, Some(broker))
        }
        _ => anyhow::bail!("usage: bench_http <listen> <secret> [<amqp_url> <exchange> <routing_key>]"),
    };
    let secrets = [(SecretSlot::Current, SecretString::from(secret.clone()))];
    let verifier = Verifier::new(&secrets, SignatureScheme::Auto, Duration::from_secs(300));
    let baseline = Arc::new(Baseline { verifier, broker });
    let router = Router::new().route("/polyai-events", post(receive)).with_state(baseline);
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    axum::serve(listener, router).await?;
    Ok(())
}
