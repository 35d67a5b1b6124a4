//! Broker-side tools of the benchmark (bench/run.sh):
//!
//! - `ceiling <amqp_url> <exchange> <routing_key> <size> <concurrency> <seconds> [rate]`: the
//!   broker's own ceiling for the receiver's work: confirmed, persistent, mandatory publishes of a
//!   given size from N concurrent publishers on the relay's channel layout (`BENCH_CHANNELS` to
//!   compare others), with the relay's properties and headers, for a fixed time; with a rate, paced
//!   as `polyai-relay send --rate` paces webhooks, the same broker work at the relay's pace. It
//!   prints the count and each publish's time to its confirm (p50, p99, max);
//! - `depth <amqp_url> <queue>`: the exact number of ready messages (a passive declare; the
//!   management statistics of quorum queues lag by seconds);
//! - `purge <amqp_url> <queue>`;
//! - `fill <amqp_url> <exchange> <routing_key> <ids_file>`: one raw event, as the receiver
//!   publishes it, for each conversation id in the file (one a line), for the worker's phase:
//!   each event makes the worker fetch a conversation of its own, as distinct webhooks would (the
//!   receiver would rightly take identical signed deliveries of the same second for one).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{confirm_channels, publish_confirmed, relay_properties};
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions},
    types::FieldTable,
    Confirmation, Connection, ConnectionProperties,
};
use polyai_relay::worker::Throttle;

mod common;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["ceiling", rest @ ..] => ceiling(&rest.iter().map(|s| s.to_string()).collect::<Vec<_>>()).await,
        ["depth", url, queue] => {
            let channel = Connection::connect(url, ConnectionProperties::default()).await?.create_channel().await?;
            let options = QueueDeclareOptions { passive: true, ..Default::default() };
            let declared = channel.queue_declare((*queue).into(), options, FieldTable::default()).await?;
            println!("{}", declared.message_count());
            Ok(())
        }
        ["purge", url, queue] => {
            let channel = Connection::connect(url, ConnectionProperties::default()).await?.create_channel().await?;
            channel.queue_purge((*queue).into(), QueuePurgeOptions::default()).await?;
            Ok(())
        }
        ["fill", url, exchange, key, ids_file] => {
            let ids = std::fs::read_to_string(ids_file)?;
            let ids: Vec<&str> = ids.lines().map(str::trim).filter(|id| !id.is_empty()).collect();
            anyhow::ensure!(!ids.is_empty(), "no conversation id in {ids_file}");
            let channel = Connection::connect(url, ConnectionProperties::default()).await?.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            let mut confirms = Vec::new();
            for id in ids {
                let body = serde_json::json!({
                    "type": "conversation.completed",
                    "data": {"conversation_id": id, "environment": "live"},
                })
                .to_string();
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                let publish = channel.basic_publish(
                    (*exchange).into(),
                    (*key).into(),
                    options,
                    body.as_bytes(),
                    relay_properties(),
                );
                confirms.push(publish.await?);
            }
            for confirm in confirms {
                anyhow::ensure!(matches!(confirm.await?, Confirmation::Ack(None)), "a fill message was not confirmed");
            }
            Ok(())
        }
        _ => anyhow::bail!("usage: bench_broker ceiling|depth|purge|fill …"),
    }
}

async fn ceiling(args: &[String]) -> anyhow::Result<()> {
    let (url, exchange, key, size, concurrency, seconds, rate) = match args {
        [url, exchange, key, size, concurrency, seconds] => (url, exchange, key, size, concurrency, seconds, None),
        [url, exchange, key, size, concurrency, seconds, rate] => {
            (url, exchange, key, size, concurrency, seconds, Some(rate.parse::<f64>()?))
        }
        _ => anyhow::bail!(
            "usage: bench_broker ceiling <amqp_url> <exchange> <routing_key> <size> <concurrency> <seconds> [rate]"
        ),
    };
    let (size, concurrency, seconds): (usize, usize, u64) = (size.parse()?, concurrency.parse()?, seconds.parse()?);
    // The sender's pacing, so that a paced run here and `send --rate` offer the broker the same load.
    let throttle = Arc::new(Throttle::new(rate));
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channels = confirm_channels(&connection).await?;
    let body = Arc::new(vec![b'x'; size]);
    let confirmed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let (channel, body, confirmed) = (channels[i % channels.len()].clone(), body.clone(), confirmed.clone());
        let (exchange, key, throttle) = (exchange.clone(), key.clone(), throttle.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                throttle.acquire().await;
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let acked = publish_confirmed(&channel, &exchange, &key, &body).await?;
                latencies.push(sent.elapsed());
                if acked {
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, lapin::Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = confirmed.load(Ordering::Relaxed);
    println!("confirmed: {count} in {elapsed:.2}s ({:.1} msg/s)", count as f64 / elapsed);
    latencies.sort_unstable();
    let ms = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!("confirm latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", ms(0.5), ms(0.99), ms(1.0));
    Ok(())
}
