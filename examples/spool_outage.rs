//! The spool's acceptance run (bench/spool.sh): a broker outage of a fixed length with webhooks
//! sent all through it, ending with every webhook answered 204 enriched.
//!
//! `spool_outage <relay binary> <amqp url> <outage seconds> <webhooks> <spool dir>`
//!
//! Runs the real binary (`run`: receiver, spool and worker) against the mock API (in process) and
//! RabbitMQ through the tests' TCP proxy (crates/testkit/src/proxy.rs). Once the relay publishes
//! straight to the broker, the proxy is cut (every connection dropped, new ones refused) for the
//! outage, during which the webhooks are sent evenly, each with its own event id and conversation;
//! then the proxy is restored, and the enriched records are read from `polyai.conversations` until
//! every event the relay queued (answered 204, straight or spooled) is there.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions},
    types::FieldTable,
    Connection, ConnectionProperties,
};
use polyai_relay_devtools::{
    mock_api::{MockApi, MockConfig},
    sender::{event_body, signed_post, SendScheme},
};
use polyai_relay_testkit::proxy::Proxy;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_spool_outage";
/// Warm-up webhooks at most, [`WARMUP_PAUSE`] apart: about 30 s for the relay to reach the broker.
const WARMUP_ATTEMPTS: usize = 300;
const WARMUP_PAUSE: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, amqp_url, outage, webhooks, spool_dir] = args.as_slice() else {
        bail!("usage: spool_outage <relay binary> <amqp url> <outage seconds> <webhooks> <spool dir>");
    };
    let outage = Duration::from_secs(outage.parse()?);
    let webhooks: usize = webhooks.parse()?;

    // Every webhook, warm-up included, is about a finished conversation of its own, one the mock
    // serves. The receiver answers a copy of a delivery it queued moments ago (the same body signed
    // in the same second, under any event id) `204 duplicate` and does not queue it again (design
    // §10): a second webhook about a conversation could be one of those, never enriched under its id.
    let needed = WARMUP_ATTEMPTS + webhooks;
    let shutdown = CancellationToken::new();
    // A few generated conversations are still in progress: twice as many leaves room.
    let config = MockConfig { conversations: 2 * needed, ..MockConfig::default() };
    let mock = MockApi::bind(config, "127.0.0.1:0".parse()?, shutdown.clone()).await?;
    let conversations: Vec<String> =
        mock.conversations().iter().filter(|c| !c.in_progress).map(|c| c.id.clone()).collect();
    ensure!(conversations.len() >= needed, "the mock has {} finished conversations, not {needed}", conversations.len());
    let (warmup_conversations, outage_conversations) = conversations.split_at(WARMUP_ATTEMPTS);
    let mut broker = url::Url::parse(amqp_url)?;
    let target = tokio::net::lookup_host(format!(
        "{}:{}",
        broker.host_str().unwrap_or("127.0.0.1"),
        broker.port().unwrap_or(5672)
    ))
    .await?
    .next()
    .context("broker address")?;
    let proxy = Proxy::start(target).await;
    broker.set_host(Some("127.0.0.1"))?;
    broker.set_port(Some(proxy.address.port())).map_err(|_| anyhow::anyhow!("port"))?;

    // A free port for the relay (the relay logs its address, but as JSON among others).
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let mut relay = tokio::process::Command::new(binary)
        .arg("run")
        .env_clear()
        .envs([
            ("AMQP_URL", broker.as_str()),
            ("POLYAI_WEBHOOK_SECRET", SECRET),
            ("POLYAI_API_KEY", "mock-api-key"),
            ("POLYAI_BASE_URL", mock.base_url().as_str()),
            ("POLYAI_ACCOUNT_ID", "ws-mock"),
            ("POLYAI_PROJECT_ID", "PROJECT-MOCK"),
            ("RELAY_LISTEN", listen.as_str()),
            ("RELAY_SPOOL_DIR", spool_dir.as_str()),
            ("RELAY_LOG_FORMAT", "json"),
            ("RUST_LOG", "warn"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("the relay starts")?;

    let http = polyai_relay::http_client::builder().build()?;
    let url = format!("http://{listen}/polyai-events");
    let secret = SecretString::from(SECRET);
    let send = |conversation: &str, id: &str| {
        let body = event_body("conversation.completed", conversation, "live", None);
        signed_post(&http, &url, &secret, SendScheme::Timestamped, id, body).send()
    };

    // The events the relay queued, each to come out enriched under its id; and the webhooks it
    // answered 204 without queueing them, which no run of this benchmark should see.
    let mut accepted = HashSet::new();
    let mut not_queued = Vec::new();
    let mut count = |id: String, answer: &str| {
        if queued(answer) {
            accepted.insert(id);
        } else if answer.starts_with("204") {
            not_queued.push(format!("{id}: {answer}"));
        }
    };

    // Warm-up: until a webhook goes straight to the broker (with a spool, /readyz is 200 before).
    let mut straight = false;
    for (i, conversation) in warmup_conversations.iter().enumerate() {
        let id = format!("warmup-{i}");
        let answer = answer(&send(conversation, &id).await);
        count(id, &answer);
        straight = answer == "204";
        if straight {
            break;
        }
        tokio::time::sleep(WARMUP_PAUSE).await;
    }
    ensure!(straight, "the relay never published straight to the broker");

    proxy.cut();
    let cut = Instant::now();
    let interval = outage / webhooks.max(1) as u32;
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let mut pending = tokio::task::JoinSet::new();
    for (i, conversation) in outage_conversations.iter().take(webhooks).enumerate() {
        tokio::time::sleep_until((cut + interval * i as u32).into()).await;
        let id = format!("outage-{i}");
        let request = send(conversation, &id);
        pending.spawn(async move {
            let started = Instant::now();
            let answer = answer(&request.await);
            (id, answer, started.elapsed())
        });
    }
    while let Some(result) = pending.join_next().await {
        let (id, answer, latency) = result?;
        slowest = slowest.max(latency);
        count(id, &answer);
        *statuses.entry(answer).or_default() += 1;
    }
    // Not queued, never enriched: waiting for them would only end at the limit below.
    ensure!(not_queued.is_empty(), "answered 204 but not queued: {}", not_queued.join(", "));
    tokio::time::sleep_until((cut + outage).into()).await;
    proxy.restore();
    let restored = Instant::now();

    let seen = read_until_enriched(amqp_url, &accepted, Duration::from_secs(600)).await?;
    let enriched_after = restored.elapsed();
    let _ = relay.start_kill();
    let _ = relay.wait().await;
    shutdown.cancel();

    let missing = accepted.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!("outage: {:.1} s with the broker cut off; {webhooks} webhooks sent during it", outage.as_secs_f64());
    println!("answers during the outage: {statuses:?}; slowest {:.0} ms", slowest.as_secs_f64() * 1000.0);
    println!("queued, answered 204 (with the warm-up): {}", accepted.len());
    println!("enriched: {} of them, {missing} missing, {duplicates} duplicate records", accepted.len() - missing);
    println!("all enriched {:.1} s after the broker was back", enriched_after.as_secs_f64());
    if missing > 0 {
        bail!("{missing} events answered 204 were never enriched");
    }
    Ok(())
}

/// The relay's answer as the report shows it: the status and `X-Relay-Outcome`, e.g. `204 spooled`.
fn answer(response: &reqwest::Result<reqwest::Response>) -> String {
    match response {
        Ok(r) => match r.headers().get("x-relay-outcome").and_then(|v| v.to_str().ok()) {
            Some(outcome) => format!("{} {outcome}", r.status().as_u16()),
            None => r.status().as_u16().to_string(),
        },
        Err(_) => "no answer".to_owned(),
    }
}

/// Whether the relay queued the webhook (published it or spooled it), so it must come out
/// enriched; `204 duplicate` and `204 ignored` were not queued.
fn queued(answer: &str) -> bool {
    matches!(answer, "204" | "204 spooled")
}

/// Reads `polyai.conversations` until every id of `expected` was seen; how often each id came.
async fn read_until_enriched(
    amqp_url: &str,
    expected: &HashSet<String>,
    limit: Duration,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut consumer = channel
        .basic_consume("polyai.conversations".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !expected.iter().all(|id| seen.contains_key(id)) {
        let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(delivery)) => delivery?,
            Ok(None) => bail!("the consumer ended"),
            Err(_) => break,
        };
        let id = delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
        *seen.entry(id).or_default() += 1;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(seen)
}
