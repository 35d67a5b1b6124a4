//! The ledger on RabbitMQ: the stream `polyai.conversations.log`, which records every raw event
//! and every record (it is bound `#` to both exchanges), read from a timestamp.
//!
//! A stream never ends, so a read goes up to a marker: the reader first appends a marker of its
//! own (confirmed), then reads from the timestamp until it meets it. Everything written before
//! the read began is therefore seen, whatever the load.
//!
//! A ledger kept across passes (the worker's loop) remembers what it read and where it stopped,
//! so each later pass reads only what was appended since; a new connection reads the window again.
//!
//! One reconciler at a time: the lock is an exclusive queue (`{enrich queue}.reconcile-lock`),
//! which only one connection can hold (another gets RESOURCE_LOCKED) and which the broker drops
//! the moment the holder's connection closes, a crash included. Exclusive queues behave the same
//! on 3.10 and 4.x, and need no plugin.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    Channel, Connection,
};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::{Ledger, ReconcileError};
use crate::{
    config::{AmqpTarget, Topology},
    queue::{
        amqp::{convert, describe, publish_confirmed, session},
        ledger::conversation_of,
        Message,
    },
};

/// Stream messages read per credit window; acked in batches of half of it.
const READ_PREFETCH: u16 = 500;
/// A read that gets nothing for this long gives up (the pass fails; the next reads afresh),
/// rather than waiting for a marker it somehow cannot reach.
const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// The type of a read's end marker in the log (consumers of the log can skip it).
pub const MARKER_TYPE: &str = "relay.log.marker";

fn broker(error: lapin::Error) -> ReconcileError {
    ReconcileError::Ledger(describe(&error))
}

/// What earlier reads on this connection found.
struct Seen {
    /// Known conversation ids, with when (Unix seconds) the entry naming each was written.
    ids: HashMap<String, i64>,
    /// The stream offset the next read starts at.
    next_offset: i64,
}

pub struct AmqpLedger {
    connection: Connection,
    /// Confirm mode, for the marker and for submitted events.
    channel: Channel,
    /// Holds the exclusive lock queue while this ledger reconciles.
    lock: Mutex<Option<Channel>>,
    seen: Mutex<Option<Seen>>,
    topology: Topology,
    log: String,
}

impl AmqpLedger {
    pub async fn open(target: &AmqpTarget, topology: Topology) -> Result<Self, ReconcileError> {
        let Some(log) = topology.conversations_log.clone() else {
            return Err(ReconcileError::Ledger(
                "RELAY_CONVERSATIONS_LOG is off: reconciliation reads that stream to know which calls arrived".into(),
            ));
        };
        let (connection, channel) =
            session::open_confirmed(target, &topology, "reconciler").await.map_err(ReconcileError::Ledger)?;
        Ok(Self { connection, channel, lock: Mutex::new(None), seen: Mutex::new(None), topology, log })
    }

    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Takes the reconciler lock if no other connection holds it; true while this one does.
    pub async fn try_lock(&self) -> Result<bool, ReconcileError> {
        let mut held = self.lock.lock().await;
        if held.as_ref().is_some_and(|c| c.status().connected()) {
            return Ok(true);
        }
        let channel = self.connection.create_channel().await.map_err(broker)?;
        let name = format!("{}.reconcile-lock", self.topology.enrich_queue);
        // exclusive: only this connection may use it, and it goes when the connection does.
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        match channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await {
            Ok(_) => {
                *held = Some(channel);
                Ok(true)
            }
            Err(error) if locked(&error) => Ok(false),
            Err(error) => Err(broker(error)),
        }
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "done".into()).await;
    }

    /// Publishes to `queue` through the default exchange and waits for the confirm.
    async fn put(&self, queue: &str, message: Message) -> Result<(), ReconcileError> {
        // The default exchange routes straight to the queue named by the key.
        let (body, properties) = convert::into_amqp(message, None);
        publish_confirmed(&self.channel, "".into(), queue.into(), &body, properties)
            .await
            .map_err(|error| ReconcileError::Ledger(format!("`{queue}`: {error}")))
    }
}

/// The offset RabbitMQ stamps on each message it delivers from a stream.
fn stream_offset(properties: &lapin::BasicProperties) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(offset) => Some(*offset),
        AMQPValue::LongInt(offset) => Some(i64::from(*offset)),
        _ => None,
    }
}

fn locked(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 405)
}

#[async_trait]
impl Ledger for AmqpLedger {
    async fn known(&self, since: OffsetDateTime) -> Result<HashSet<String>, ReconcileError> {
        let marker_id = format!("marker:{}", uuid::Uuid::new_v4().simple());
        let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let marker = Message {
            body: bytes::Bytes::from_static(b"{}"),
            message_id: marker_id.clone(),
            event_type: MARKER_TYPE.to_owned(),
            timestamp: now,
            headers: Default::default(),
        };
        self.put(&self.log, marker).await?;

        // Taken out while reading: a read that fails leaves no half-updated memory behind.
        let earlier = self.seen.lock().await.take();
        let start = match &earlier {
            Some(seen) => AMQPValue::LongLongInt(seen.next_offset),
            None => AMQPValue::Timestamp(since.unix_timestamp().max(0) as u64),
        };
        let mut ids = earlier.map(|seen| seen.ids).unwrap_or_default();

        let channel = self.connection.create_channel().await.map_err(broker)?;
        // A stream consumer needs a prefetch and manual acks: acks give the credit back.
        channel.basic_qos(READ_PREFETCH, BasicQosOptions::default()).await.map_err(broker)?;
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), start);
        let mut consumer = channel
            .basic_consume(self.log.as_str().into(), "".into(), BasicConsumeOptions::default(), args)
            .await
            .map_err(broker)?;
        let mut unacked = 0u16;
        loop {
            let delivery = match tokio::time::timeout(READ_IDLE, consumer.next()).await {
                Ok(Some(delivery)) => delivery.map_err(broker)?,
                Ok(None) => break,
                Err(_) => {
                    let _ = channel.close(200, "read timed out".into()).await;
                    return Err(ReconcileError::Ledger("reading the log stream stalled before its end".into()));
                }
            };
            let is_marker = delivery.properties.message_id().as_ref().is_some_and(|id| id.as_str() == marker_id);
            if !is_marker {
                if let Some(id) = conversation_of(&delivery.data) {
                    let written = delivery.properties.timestamp().map_or(now as i64, |t| t as i64);
                    ids.insert(id, written);
                }
            }
            unacked += 1;
            if unacked >= READ_PREFETCH / 2 || is_marker {
                delivery.acker.ack(BasicAckOptions { multiple: true }).await.map_err(broker)?;
                unacked = 0;
            }
            if is_marker {
                let _ = channel.close(200, "read".into()).await;
                // Entries written before the window are about calls that started before it.
                let horizon = since.unix_timestamp();
                ids.retain(|_, written| *written >= horizon);
                let known = ids.keys().cloned().collect();
                if let Some(offset) = stream_offset(&delivery.properties) {
                    *self.seen.lock().await = Some(Seen { ids, next_offset: offset + 1 });
                }
                return Ok(known);
            }
        }
        Err(ReconcileError::Ledger("the log stream closed before its end was read".into()))
    }

    async fn submit(&self, event: Message) -> Result<(), ReconcileError> {
        self.put(&self.topology.enrich_queue, event.clone()).await?;
        // Written after this pass's marker: the next read, which starts there, sees it.
        self.put(&self.log, event).await
    }
}
