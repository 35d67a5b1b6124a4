//! The conversations log: a stream that records every raw event and every record, so the relay
//! can tell which conversations it knows (reconciliation's ledger) and consumers can replay
//! history from any point. Streams exist on RabbitMQ 3.9+ and are read over AMQP 0-9-1.
//!
//! A stream never ends, so a read goes up to a marker: the reader first appends a marker of its
//! own (confirmed), then reads from where it starts until it meets it. Everything written before
//! the read began is therefore seen, whatever the load.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Connection,
};

use super::{convert, describe, publish_confirmed, topology::inequivalent};
use crate::{config::Topology, queue::Message};

/// Stream messages read per credit window; acked in batches of half of it.
const READ_PREFETCH: u16 = 500;
/// A read that gets nothing for this long gives up, rather than waiting for a marker it somehow
/// cannot reach.
const READ_IDLE: Duration = Duration::from_secs(60);
/// The type of a read's end marker in the log (consumers of the log can skip it).
pub const MARKER_TYPE: &str = "relay.log.marker";

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

/// Where a read of the log starts.
#[derive(Debug, Clone)]
pub enum ReadFrom {
    /// The entries written from this time on (Unix seconds).
    Timestamp(u64),
    /// After where an earlier read ended: its marker, read again first to show the stream is
    /// still the one read then. A stream deleted and declared again since (its history gone)
    /// holds something else at that offset, or nothing yet: RabbitMQ waits for the offset to be
    /// written, and the read would never meet its own marker, written below it.
    After(ReadEnd),
}

/// Where a read ended: its marker's offset and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEnd {
    offset: i64,
    marker: String,
}

/// Reads the log `name` from `start` up to now, handing every entry but markers to `each`;
/// returns where it ended, to read on from there next time. The marker goes through
/// `confirm_channel`, which must be in confirm mode.
pub async fn read_to_now(
    connection: &Connection,
    confirm_channel: &Channel,
    name: &str,
    start: ReadFrom,
    mut each: impl FnMut(&Delivery),
) -> Result<Option<ReadEnd>, String> {
    let marker_id = format!("marker:{}", uuid::Uuid::new_v4().simple());
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let marker = Message {
        body: bytes::Bytes::from_static(b"{}"),
        message_id: marker_id.clone(),
        event_type: MARKER_TYPE.to_owned(),
        timestamp: now,
        headers: Default::default(),
    };
    let (body, properties) = convert::into_amqp(marker, None);
    // The default exchange routes straight to the stream named by the key.
    publish_confirmed(confirm_channel, "".into(), name.into(), &body, properties)
        .await
        .map_err(|error| format!("`{name}`: {error}"))?;

    let failed = |error: lapin::Error| describe(&error);
    let channel = connection.create_channel().await.map_err(failed)?;
    // A stream consumer needs a prefetch and manual acks: acks give the credit back.
    channel.basic_qos(READ_PREFETCH, BasicQosOptions::default()).await.map_err(failed)?;
    let mut args = FieldTable::default();
    let (offset, mut earlier) = match start {
        ReadFrom::Timestamp(seconds) => (AMQPValue::Timestamp(seconds), None),
        ReadFrom::After(end) => (AMQPValue::LongLongInt(end.offset), Some(end)),
    };
    args.insert("x-stream-offset".into(), offset);
    let mut consumer =
        channel.basic_consume(name.into(), "".into(), BasicConsumeOptions::default(), args).await.map_err(failed)?;
    let mut unacked = 0u16;
    loop {
        let delivery = match tokio::time::timeout(READ_IDLE, consumer.next()).await {
            Ok(Some(delivery)) => delivery.map_err(failed)?,
            Ok(None) => return Err("the log stream closed before its end was read".into()),
            Err(_) => {
                let _ = channel.close(200, "read timed out".into()).await;
                return Err("reading the log stream stalled before its end".into());
            }
        };
        let id = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned());
        let is_marker = id.as_deref() == Some(marker_id.as_str());
        match &earlier {
            // Reading on from an earlier read: entries before its marker (the head of the chunk
            // holding it, were the broker to send them) are passed over, and the first after
            // them is that marker, or the stream is not the one read then.
            Some(end) if stream_offset(&delivery.properties).is_some_and(|offset| offset < end.offset) => {}
            Some(end) => {
                if id.as_deref() != Some(end.marker.as_str()) {
                    let _ = channel.close(200, "stream recreated".into()).await;
                    return Err(format!(
                        "the log stream `{name}` does not hold where it was last read (deleted and declared again?)"
                    ));
                }
                earlier = None;
            }
            None if !is_marker => each(&delivery),
            None => {}
        }
        unacked += 1;
        if unacked >= READ_PREFETCH / 2 || is_marker {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await.map_err(failed)?;
            unacked = 0;
        }
        if is_marker {
            let _ = channel.close(200, "read".into()).await;
            return Ok(stream_offset(&delivery.properties).map(|offset| ReadEnd { offset, marker: marker_id }));
        }
    }
}

/// The offset RabbitMQ stamps on each message it delivers from a stream.
fn stream_offset(properties: &BasicProperties) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(offset) => Some(*offset),
        AMQPValue::LongInt(offset) => Some(i64::from(*offset)),
        _ => None,
    }
}
