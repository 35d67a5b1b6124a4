//! The conversations log: a stream that records every raw event and every record, so the relay
//! can tell which conversations it knows (reconciliation's ledger) and consumers can replay
//! history from any point. Streams exist on RabbitMQ 3.9+ and are read over AMQP 0-9-1.

use lapin::{
    options::{QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Channel, Connection,
};

use super::topology::inequivalent;
use crate::config::Topology;

/// Declares the stream and binds it `#` to the raw-events and the records exchanges; returns
/// the channel to go on with (a refused declaration closes the one it was given).
pub async fn declare(connection: &Connection, channel: Channel, topology: &Topology) -> lapin::Result<Channel> {
    let Some(name) = &topology.conversations_log else { return Ok(channel) };
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("stream".as_bytes())));
    // Retention by age: whole segments older than this are dropped. The unit `s` is one both
    // 3.10 and 4.x parse (`Y`, `M`, `D`, `h`, `m`, `s`).
    let max_age = format!("{}s", topology.log_retention.as_secs().max(1));
    args.insert("x-max-age".into(), AMQPValue::LongString(LongString::from(max_age.as_bytes())));
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    let channel = match channel.queue_declare(ShortString::from(name.as_str()), options, args).await {
        Ok(_) => channel,
        // Declared before with another retention: kept as it is (deleting it would lose the
        // history), with a warning; RabbitMQ refuses to change a declared argument.
        Err(error) if inequivalent(&error) => {
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            channel.queue_declare(ShortString::from(name.as_str()), passive, FieldTable::default()).await?;
            tracing::warn!(
                stream = name.as_str(),
                "the conversations log exists with another retention than RELAY_LOG_RETENTION; it keeps its own (delete the stream to change it)"
            );
            channel
        }
        Err(error) => return Err(error),
    };
    for exchange in [&topology.events_exchange, &topology.conversations_exchange] {
        channel
            .queue_bind(
                name.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(channel)
}
