//! Declares exchanges and queues (design §4), idempotently: the same arguments every time, so a
//! second relay or a restart declares exactly what exists. Only features RabbitMQ 3.10 has too.
//!
//! Every queue states its arguments explicitly, so a broker's defaults (4.0 gives each quorum
//! queue a delivery limit of 20) never decide what happens to a message.

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Channel, Connection, ExchangeKind,
};

use crate::{config::Topology, queue::RETRY_TIERS};

/// Deliveries of one message before a queue with nowhere safe to dead-letter would drop it: so
/// many that no requeue loop reaches it. Not -1: RabbitMQ 3.10 reads -1 as "drop at the first
/// requeue", and 4.0's default of 20 would let a consumer that nacks a record 20 times delete it.
pub const KEEP_DELIVERY_LIMIT: i32 = i32::MAX;

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes()))
}

/// Arguments every queue of the relay shares.
fn quorum_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    // Quorum queues replicate to a majority before confirming; they are the durable queue type of 3.10 and 4.x.
    args.insert("x-queue-type".into(), text("quorum"));
    // Should a policy ever cap the length, a full queue refuses new messages (the publisher sees a
    // nack and answers 503) instead of silently dropping its oldest ones (the default, drop-head).
    args.insert("x-overflow".into(), text("reject-publish"));
    args
}

/// Arguments that make a queue dead-letter without ever dropping the message on the way.
fn dead_letter_arguments(args: &mut FieldTable, exchange: &str, routing_key: Option<&str>) {
    args.insert("x-dead-letter-exchange".into(), text(exchange));
    if let Some(key) = routing_key {
        args.insert("x-dead-letter-routing-key".into(), text(key));
    }
    // At-least-once dead-lettering (3.10+): the source keeps the message until the target confirmed it.
    // It requires reject-publish overflow (set by `quorum_arguments`); without it RabbitMQ silently
    // falls back to at-most-once.
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(ShortString::from(name), kind, options, FieldTable::default()).await
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(ShortString::from(name), options, args).await.map(|_| ())
}

pub(super) fn inequivalent(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// Declares a queue that holds what must never be lost. One declared by an older relay with other
/// arguments is kept as it is (RabbitMQ refuses to redeclare it, and deleting it would lose its
/// messages), with a warning saying how to give it the safe arguments. The refusal closes the
/// channel, so the caller gets a fresh one back.
async fn keeping_queue(connection: &Connection, channel: Channel, name: &str) -> lapin::Result<Channel> {
    let mut args = quorum_arguments();
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(KEEP_DELIVERY_LIMIT));
    match queue(&channel, name, args).await {
        Ok(()) => Ok(channel),
        Err(error) if inequivalent(&error) => {
            let channel = connection.create_channel().await?;
            let options = QueueDeclareOptions { passive: true, ..Default::default() };
            channel.queue_declare(ShortString::from(name), options, FieldTable::default()).await?;
            tracing::warn!(
                queue = name,
                "the queue exists with other arguments than this relay declares; it is kept as it is. \
                 On RabbitMQ 4.x a consumer that requeues a message 20 times can make the broker delete it: \
                 set a policy with a large `delivery-limit` on it, or move its messages to a queue declared \
                 by this version (see README, RabbitMQ topology)"
            );
            Ok(channel)
        }
        Err(error) => Err(error),
    }
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await
}

/// Declares the whole topology on a channel of its own, closed when done.
pub async fn declare(connection: &Connection, topology: &Topology) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    exchange(&channel, &topology.events_exchange, ExchangeKind::Topic).await?;
    exchange(&channel, &topology.conversations_exchange, ExchangeKind::Topic).await?;
    exchange(&channel, &topology.dead_exchange, ExchangeKind::Fanout).await?;

    // Dead letters have nowhere further to go: the limit keeps a browsing tool that gets and
    // requeues them from ever making the broker drop one.
    let channel = keeping_queue(connection, channel, &topology.dead_queue).await?;
    bind(&channel, &topology.dead_queue, &topology.dead_exchange, "").await?;

    // The backstop against a message that crashes the worker every time: after this many
    // deliveries the broker dead-letters it instead of handing it out again.
    let mut enrich = quorum_arguments();
    dead_letter_arguments(&mut enrich, &topology.dead_exchange, None);
    let limit = topology.delivery_limit.min(i32::MAX as u32) as i32;
    enrich.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
    queue(&channel, &topology.enrich_queue, enrich).await?;
    for key in topology.event_types.binding_keys() {
        bind(&channel, &topology.enrich_queue, &topology.events_exchange, &key).await?;
    }

    // Retries wait in delay queues that dead-letter back into the worker's queue when their TTL
    // runs out: the retry mechanism both 3.10 and 4.x have (no delayed-message plugin needed).
    // They keep the broker's delivery limit: nothing consumes them, and should something requeue
    // from one past that limit, the message dead-letters to the worker's queue, never into nothing.
    for tier in RETRY_TIERS {
        let mut args = quorum_arguments();
        dead_letter_arguments(&mut args, "", Some(&topology.enrich_queue));
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(tier.as_millis() as i64));
        queue(&channel, &topology.retry_queue(tier), args).await?;
    }

    // Downstream consumers may nack and requeue a record as often as they like: it stays.
    let channel = match &topology.conversations_queue {
        Some(name) => {
            let channel = keeping_queue(connection, channel, name).await?;
            bind(&channel, name, &topology.conversations_exchange, "#").await?;
            channel
        }
        None => channel,
    };
    // The log that reconciliation reads, and consumers may replay.
    let channel = super::log::declare(connection, channel, topology).await?;
    let _ = channel.close(200, "topology declared".into()).await;
    Ok(())
}
