//! The ledger on RabbitMQ: the stream `polyai.conversations.log`, which records every raw event
//! and every record (it is bound `#` to both exchanges), read from a timestamp. A raw event the
//! broker refused is followed by its withdrawal ([`crate::queue::ledger::WITHDRAWN_TYPE`]).
//!
//! A read goes up to a marker of its own, so it sees everything written before it began
//! ([`log::read_to_now`]); a read that fails fails the pass, and the next reads afresh.
//!
//! A ledger kept across passes (the worker's loop) remembers what it read and where it stopped,
//! so each later pass reads only what was appended since; a new connection reads the window again.
//!
//! One reconciler at a time: the lock is the exclusive queue `{enrich queue}.reconcile-lock`
//! ([`exclusive`]), dropped by the broker the moment the holder's connection closes.

use async_trait::async_trait;
use lapin::{Channel, Connection};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::{Ledger, ReconcileError};
use crate::{
    config::{AmqpTarget, Topology},
    queue::{
        amqp::{
            convert, describe, exclusive,
            log::{self, ReadEnd, ReadFrom},
            publish_confirmed, session,
        },
        ledger::{Known, KnownConversations, LogEntry, Through},
        Message,
    },
};

fn broker(error: lapin::Error) -> ReconcileError {
    ReconcileError::Ledger(describe(&error))
}

/// What earlier reads on this connection found.
struct Seen {
    /// The conversations the entries read so far make known.
    known: KnownConversations,
    /// Where the last read ended: the next reads on from there.
    end: ReadEnd,
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
        let name = format!("{}.reconcile-lock", self.topology.enrich_queue);
        *held = exclusive::try_hold(&self.connection, &name).await.map_err(broker)?;
        Ok(held.is_some())
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

#[async_trait]
impl Ledger for AmqpLedger {
    async fn known(&self, since: OffsetDateTime) -> Result<Known, ReconcileError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        // Taken out while reading: a read that fails leaves no half-updated memory behind.
        let earlier = self.seen.lock().await.take();
        let start = match &earlier {
            Some(seen) => ReadFrom::After(seen.end.clone()),
            None => ReadFrom::Timestamp(since.unix_timestamp().max(0) as u64),
        };
        let mut known = earlier.map(|seen| seen.known).unwrap_or_default();
        let end = log::read_to_now(&self.connection, &self.channel, &self.log, start, |entry| {
            known.note(LogEntry {
                event_type: entry.properties.kind().as_ref().map_or("", |kind| kind.as_str()),
                message_id: entry.properties.message_id().as_ref().map_or("", |id| id.as_str()),
                body: &entry.data,
                written: entry.properties.timestamp().map_or(now, |t| t as i64),
                through: match entry.exchange.as_str() {
                    "" => Through::Straight,
                    exchange if exchange == self.topology.events_exchange => Through::Events,
                    _ => Through::Other,
                },
            });
        })
        .await
        .map_err(ReconcileError::Ledger)?;
        // Entries written before the window are about calls that started before it.
        known.forget_before(since.unix_timestamp());
        let found = known.known();
        if let Some(end) = end {
            *self.seen.lock().await = Some(Seen { known, end });
        }
        Ok(found)
    }

    async fn submit(&self, event: Message) -> Result<(), ReconcileError> {
        self.put(&self.topology.enrich_queue, event.clone()).await?;
        // Written after this pass's marker: the next read, which starts there, sees it.
        self.put(&self.log, event).await
    }
}
