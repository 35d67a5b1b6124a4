//! What the benchmark's baselines share (`bench_broker`, `bench_http`): the relay's allocator,
//! so that a baseline's CPU per message is its work's and not another malloc's; and for the lapin
//! ones the relay's channel layout and the properties of a raw event, so that every baseline gives
//! the broker exactly the receiver's work.

use std::sync::atomic::{AtomicU64, Ordering};

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Confirmation, Connection,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Publishing channels per connection, as the relay's publisher opens them.
pub const CHANNELS: usize = 4;

/// `BENCH_CHANNELS` confirm-mode channels on `connection`, [`CHANNELS`] unless set.
pub async fn confirm_channels(connection: &Connection) -> anyhow::Result<Vec<Channel>> {
    let count = std::env::var("BENCH_CHANNELS").ok().and_then(|n| n.parse().ok()).unwrap_or(CHANNELS);
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    Ok(channels)
}

/// One persistent, `mandatory` publish with the relay's properties; whether the broker acked it
/// and routed it to a queue.
pub async fn publish_confirmed(channel: &Channel, exchange: &str, key: &str, body: &[u8]) -> lapin::Result<bool> {
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm = channel.basic_publish(exchange.into(), key.into(), options, body, relay_properties()).await?.await?;
    Ok(matches!(confirm, Confirmation::Ack(None)))
}

/// A new event id, written as the random ones were but from a counter: the relay takes its id
/// from the request, and a random one cost the baseline a `getrandom` call per message.
fn next_event_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("evt_{}", uuid::Uuid::from_u128(u128::from(NEXT.fetch_add(1, Ordering::Relaxed))).simple())
}

/// The properties the relay sets on a raw event (design §4), so the broker parses and stores
/// the same message: persistent JSON, id, type, timestamp, app id and four headers.
pub fn relay_properties() -> BasicProperties {
    let mut headers = FieldTable::default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    for (name, value) in [
        ("x-relay-project", "default".to_owned()),
        ("x-polyai-timestamp", now.to_string()),
        ("x-relay-signature-scheme", "timestamped".to_owned()),
        ("x-relay-received-at", "2026-11-29T06:00:00.123456789Z".to_owned()),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(value.as_bytes().into()));
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(next_event_id().into())
        .with_type("conversation.completed".into())
        .with_timestamp(now)
        .with_app_id("polyai-relay".into())
        .with_headers(headers)
}
