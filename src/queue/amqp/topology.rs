//! Declares exchanges and queues (design §4), idempotently: the same arguments every time, so a
//! second relay or a restart declares exactly what exists. Only features RabbitMQ 3.10 has too.

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Channel, ExchangeKind,
};

use crate::{config::Topology, queue::RETRY_TIERS};

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes()))
}

/// Arguments every queue of the relay shares.
fn quorum_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    // Quorum queues replicate to a majority before confirming; they are the durable queue type of 3.10 and 4.x.
    args.insert("x-queue-type".into(), text("quorum"));
    args
}

/// Arguments that make a queue dead-letter without ever dropping the message on the way.
fn dead_letter_arguments(args: &mut FieldTable, exchange: &str, routing_key: Option<&str>) {
    args.insert("x-dead-letter-exchange".into(), text(exchange));
    if let Some(key) = routing_key {
        args.insert("x-dead-letter-routing-key".into(), text(key));
    }
    // At-least-once dead-lettering (3.10+): the source keeps the message until the target confirmed it.
    // It requires reject-publish overflow; without it RabbitMQ silently falls back to at-most-once.
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(ShortString::from(name), kind, options, FieldTable::default()).await
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(ShortString::from(name), options, args).await.map(|_| ())
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await
}

/// Declares the whole topology on `channel`.
pub async fn declare(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    exchange(channel, &topology.events_exchange, ExchangeKind::Topic).await?;
    exchange(channel, &topology.conversations_exchange, ExchangeKind::Topic).await?;
    exchange(channel, &topology.dead_exchange, ExchangeKind::Fanout).await?;

    queue(channel, &topology.dead_queue, quorum_arguments()).await?;
    bind(channel, &topology.dead_queue, &topology.dead_exchange, "").await?;

    let mut enrich = quorum_arguments();
    dead_letter_arguments(&mut enrich, &topology.dead_exchange, None);
    // The backstop against a message that crashes the worker every time: after this many
    // deliveries the broker dead-letters it instead of handing it out again.
    enrich.insert("x-delivery-limit".into(), AMQPValue::LongInt(topology.delivery_limit.min(i32::MAX as u32) as i32));
    queue(channel, &topology.enrich_queue, enrich).await?;
    for key in topology.event_types.binding_keys() {
        bind(channel, &topology.enrich_queue, &topology.events_exchange, &key).await?;
    }

    // Retries wait in delay queues that dead-letter back into the worker's queue when their TTL
    // runs out: the retry mechanism both 3.10 and 4.x have (no delayed-message plugin needed).
    for tier in RETRY_TIERS {
        let mut args = quorum_arguments();
        dead_letter_arguments(&mut args, "", Some(&topology.enrich_queue));
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(tier.as_millis() as i64));
        queue(channel, &topology.retry_queue(tier), args).await?;
    }

    if let Some(name) = &topology.conversations_queue {
        queue(channel, name, quorum_arguments()).await?;
        bind(channel, name, &topology.conversations_exchange, "#").await?;
    }
    Ok(())
}
