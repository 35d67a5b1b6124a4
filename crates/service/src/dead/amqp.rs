//! Dead letters on RabbitMQ: `polyai.dead` read once around, never browsed.
//!
//! Why not get-and-requeue: a quorum queue counts every message handed back to it. RabbitMQ
//! 4.0 gives every quorum queue a delivery limit of 20 by default, and `polyai.dead` has no
//! dead-letter exchange, so a message returned 20 times is deleted. Up to 4.2 a message
//! returned by closing the channel (or cancelling the consumer) counts as well (only 4.3 stopped
//! counting those), so "basic.get, then close without acking" is no safer than a nack.
//!
//! So nothing is ever handed back. Each dead letter is taken (`basic.get`, manual ack), an
//! identical copy (same body and properties, `x-death` included) is published straight to the
//! tail of the same queue through the default exchange, and only once the broker confirmed the
//! copy is the original acked. Exactly as many messages as the queue held are taken, so one pass
//! goes once around: the set and the order are unchanged, every copy starts with no delivery
//! count, and the same holds on 3.10 and every 4.x. A replayed letter's copy goes to the
//! worker's queue instead, or, for a record, to the conversations exchange. If the pass is
//! killed between a confirm and its ack, the original comes back too: a duplicate dead letter
//! (at-least-once), never a lost one.

use async_trait::async_trait;
use lapin::{
    options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection,
};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_util::sync::CancellationToken;

use super::{
    replay_destination, replayed, DeadError, DeadLetter, DeadLetters, ReplayProgress, ReplayRequest, ReplaySummary,
};
use crate::{
    config::{AmqpTarget, Topology},
    queue::{
        amqp::{convert, describe, publish_confirmed, session},
        Destination, PublishError,
    },
};

/// `polyai.dead`, the worker's queue and the conversations exchange on a confirm-mode channel of
/// their own.
pub struct AmqpDeadLetters {
    connection: Connection,
    channel: Channel,
    topology: Topology,
}

fn broker(error: lapin::Error) -> DeadError {
    DeadError::Broker(describe(&error))
}

/// How a pass went.
struct Went {
    /// Stopped at a signal before it went all the way around.
    interrupted: bool,
    /// Replays that found no queue, kept as they were.
    unroutable: u64,
    /// The dead letters it left in place: those it kept, and those it did not reach. (A quorum
    /// queue asked right after can still count the letters acked last.)
    left: u64,
}

/// What to do with one dead letter in a pass.
enum Action {
    /// Back to the tail of the dead letters.
    Keep,
    /// To the worker's queue, or a record to the conversations exchange, as this message.
    Replay(Destination, crate::queue::Message),
}

impl AmqpDeadLetters {
    pub async fn open(target: &AmqpTarget, topology: Topology) -> Result<Self, DeadError> {
        let (connection, channel) =
            session::open_confirmed(target, &topology, "dead letters").await.map_err(DeadError::Broker)?;
        Ok(Self { connection, channel, topology })
    }

    async fn count(&self) -> Result<u64, DeadError> {
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = self
            .channel
            .queue_declare(self.topology.dead_queue.as_str().into(), options, FieldTable::default())
            .await
            .map_err(broker)?;
        Ok(u64::from(declared.message_count()))
    }

    /// Publishes to `queue` through the default exchange, which routes straight to the queue
    /// named by the key, and waits for the broker's confirm.
    async fn put(&self, queue: &str, body: &[u8], properties: BasicProperties) -> Result<(), DeadError> {
        self.publish("", queue, body, properties).await
    }

    /// Sends a replayed letter where [`replay_destination`] says: an event straight to the
    /// worker's queue (raw-event subscribers and the log saw it already), a record through the
    /// conversations exchange, as the worker would have published it. False for a record no
    /// queue took (`mandatory`): still no queue is bound for it.
    async fn put_replayed(&self, to: Destination, message: crate::queue::Message) -> Result<bool, DeadError> {
        let routing_key = message.event_type.clone();
        let (body, properties) = convert::into_amqp(message, None);
        match to {
            Destination::Conversations => {
                let exchange = self.topology.conversations_exchange.as_str();
                match self.publish(exchange, &routing_key, &body, properties).await {
                    Err(DeadError::Unroutable(_)) => Ok(false),
                    published => published.map(|()| true),
                }
            }
            _ => self.put(&self.topology.enrich_queue, &body, properties).await.map(|()| true),
        }
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), DeadError> {
        publish_confirmed(&self.channel, exchange.into(), routing_key.into(), body, properties).await.map_err(|error| {
            match error {
                PublishError::Failed(reason) => DeadError::Broker(reason),
                PublishError::Unroutable(reason) => DeadError::Unroutable(reason),
                other => DeadError::NotConfirmed(format!("`{exchange}` `{routing_key}`: {other}")),
            }
        })
    }

    /// Goes once around the dead letters, letting `decide` keep or replay each.
    async fn pass(
        &self,
        stop: &CancellationToken,
        mut on_start: impl FnMut(u64),
        mut decide: impl FnMut(DeadLetter, crate::queue::Message) -> Action,
    ) -> Result<Went, DeadError> {
        let total = self.count().await?;
        on_start(total);
        let queue = self.topology.dead_queue.as_str();
        let (mut unroutable, mut kept) = (0, 0);
        for done in 0..total {
            if stop.is_cancelled() {
                return Ok(Went { interrupted: true, unroutable, left: kept + (total - done) });
            }
            let got = self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.map_err(broker)?;
            // Someone else took the rest (another pass, a consumer of their own).
            let Some(got) = got else { return Ok(Went { interrupted: false, unroutable, left: kept }) };
            let delivery = got.delivery;
            let message = convert::message(delivery.data.clone(), &delivery.properties);
            let (dead_at, error) = x_death(&delivery.properties);
            let letter = DeadLetter::from_message(&message, dead_at, error);
            match decide(letter, message) {
                Action::Keep => {
                    self.put(queue, &delivery.data, delivery.properties.clone()).await?;
                    kept += 1;
                }
                Action::Replay(to, message) => {
                    let event_id = message.message_id.clone();
                    if !self.put_replayed(to, message).await? {
                        // A record whose return made it a dead letter, still with no queue bound
                        // for it: kept as it was, and the others go on.
                        tracing::warn!(%event_id, exchange = self.topology.conversations_exchange, "a record stays a dead letter: no queue takes it yet; bind one, then replay it");
                        self.put(queue, &delivery.data, delivery.properties.clone()).await?;
                        unroutable += 1;
                        kept += 1;
                    }
                }
            }
            delivery.acker.ack(BasicAckOptions::default()).await.map_err(broker)?;
        }
        Ok(Went { interrupted: false, unroutable, left: kept })
    }
}

/// When and why the broker itself dead-lettered a message (the delivery-limit backstop), from
/// its first `x-death` entry.
fn x_death(properties: &BasicProperties) -> (Option<String>, Option<String>) {
    let first = properties.headers().as_ref().and_then(|h| match h.inner().get("x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries.as_slice().first().cloned(),
        _ => None,
    });
    let Some(AMQPValue::FieldTable(entry)) = first else { return (None, None) };
    let time = match entry.inner().get("time") {
        Some(AMQPValue::Timestamp(seconds)) => {
            OffsetDateTime::from_unix_timestamp(*seconds as i64).ok().and_then(|t| t.format(&Rfc3339).ok())
        }
        _ => None,
    };
    let reason = match entry.inner().get("reason") {
        Some(AMQPValue::LongString(reason)) => Some(format!("dead-lettered by the broker: {reason}")),
        _ => None,
    };
    (time, reason)
}

#[async_trait]
impl DeadLetters for AmqpDeadLetters {
    async fn list(&self, limit: Option<usize>) -> Result<Vec<DeadLetter>, DeadError> {
        let mut letters = Vec::new();
        let never = CancellationToken::new();
        // Always once all the way around, even for a few: a pass that stopped part way would
        // leave the letters it went through behind the others, and the next list in another order.
        self.pass(
            &never,
            |_| {},
            |letter, _| {
                if limit.is_none_or(|limit| letters.len() < limit) {
                    letters.push(letter);
                }
                Action::Keep
            },
        )
        .await?;
        Ok(letters)
    }

    async fn replay(
        &self,
        request: &ReplayRequest,
        progress: &ReplayProgress,
        stop: &CancellationToken,
    ) -> Result<ReplaySummary, DeadError> {
        let mut replayed_count = 0u64;
        let now = OffsetDateTime::now_utc();
        let went = self
            .pass(
                stop,
                |total| progress.start(total),
                |letter, message| {
                    let action = if request.selection.takes(&letter.event_id) {
                        replayed_count += 1;
                        if request.dry_run {
                            Action::Keep
                        } else {
                            let to = replay_destination(&message);
                            Action::Replay(to, replayed(message, request.reason.as_deref(), now))
                        }
                    } else {
                        Action::Keep
                    };
                    progress.step(replayed_count);
                    action
                },
            )
            .await?;
        // Both can count too many: the broker the letters acked last, the pass its own copies
        // when the count it started from was high (and so went around more than once).
        let left = went.left.min(self.count().await?);
        Ok(ReplaySummary { replayed: replayed_count - went.unroutable, left, interrupted: went.interrupted })
    }

    async fn close(&self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}
