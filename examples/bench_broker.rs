//! Broker-side tools of the benchmark (bench/run.sh):
//!
//! - `ceiling <amqp_url> <exchange> <routing_key> <size> <concurrency> <seconds>`: the broker's own
//!   ceiling for the receiver's work: confirmed, persistent, mandatory publishes of a given size
//!   from N concurrent publishers on 4 channels (the relay's layout), for a fixed time;
//! - `depth <amqp_url> <queue>`: the exact number of ready messages (a passive declare; the
//!   management statistics of quorum queues lag by seconds);
//! - `purge <amqp_url> <queue>`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions},
    types::FieldTable,
    BasicProperties, Confirmation, Connection, ConnectionProperties,
};

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
        _ => anyhow::bail!("usage: bench_broker ceiling|depth|purge …"),
    }
}

async fn ceiling(args: &[String]) -> anyhow::Result<()> {
    let [url, exchange, key, size, concurrency, seconds] = args else {
        anyhow::bail!("usage: bench_broker ceiling <amqp_url> <exchange> <routing_key> <size> <concurrency> <seconds>");
    };
    let (size, concurrency, seconds): (usize, usize, u64) = (size.parse()?, concurrency.parse()?, seconds.parse()?);
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut channels = Vec::new();
    for _ in 0..4 {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    let body = Arc::new(vec![b'x'; size]);
    let confirmed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let (channel, body, confirmed) = (channels[i % channels.len()].clone(), body.clone(), confirmed.clone());
        let (exchange, key) = (exchange.clone(), key.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(uuid::Uuid::new_v4().to_string().into());
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                let confirm = channel
                    .basic_publish(exchange.as_str().into(), key.as_str().into(), options, &body, properties)
                    .await?
                    .await?;
                if matches!(confirm, Confirmation::Ack(None)) {
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, lapin::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = confirmed.load(Ordering::Relaxed);
    println!("confirmed: {count} in {elapsed:.2}s ({:.1} msg/s)", count as f64 / elapsed);
    Ok(())
}
