//! The queue boundary: publish with a confirm, consume with an ack.
//!
//! The receiver and the worker see only these traits; `amqp` is the RabbitMQ backend.

pub mod amqp;
mod backend;
mod confirmed;
pub mod embedded;
pub mod ledger;
mod message;
mod metered;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

pub use backend::{Backend, OpenError};
pub use confirmed::publish_until_confirmed;
pub use message::{headers, Message};
pub use metered::Metered;

/// Where a message goes. Backends map each to their own exchange or table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Verified raw events, for the worker.
    Events,
    /// Enriched records, for downstream consumers.
    Conversations,
    /// Back to the worker after `delay`, without holding anything in memory meanwhile.
    Retry { delay: Duration },
    /// Events that failed for good, with their last error.
    Dead,
    /// A raw event the broker refused, withdrawn from the conversations log that may hold a copy
    /// ([`ledger::WITHDRAWN_TYPE`]); only where [`Publisher::keeps_refused_copies`].
    Withdrawn,
}

impl Destination {
    /// How many kinds there are: [`Destination::index`] is below it.
    pub const COUNT: usize = 5;

    pub fn label(&self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Conversations => "conversations",
            Self::Retry { .. } => "retry",
            Self::Dead => "dead",
            Self::Withdrawn => "withdrawn",
        }
    }

    /// A number for each kind, as [`Destination::label`] names them: for tables by kind.
    pub fn index(&self) -> usize {
        match self {
            Self::Events => 0,
            Self::Conversations => 1,
            Self::Retry { .. } => 2,
            Self::Dead => 3,
            Self::Withdrawn => 4,
        }
    }
}

/// Delay queues for retries. A retry waits in the shortest tier at least as long as its delay,
/// with its exact delay as the message's own TTL. A tier bounds how long an early-expiring
/// message can sit behind a later one (TTL is enforced at the head of a queue).
pub const RETRY_TIERS: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(3600),
];

/// The tier a retry of `delay` waits in, and the delay actually applied (capped by the last tier).
pub fn retry_tier(delay: Duration) -> (Duration, Duration) {
    let last = RETRY_TIERS[RETRY_TIERS.len() - 1];
    let delay = delay.min(last);
    let tier = RETRY_TIERS.iter().copied().find(|t| *t >= delay).unwrap_or(last);
    (tier, delay)
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the queue is not available")]
    Unavailable,
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key `{0}`")]
    Unroutable(String),
    #[error("the broker did not confirm in time")]
    Timeout,
    #[error("publish failed: {0}")]
    Failed(String),
    /// Over the broker's `max_message_size`: never sent, since the broker would close the channel
    /// over it, and every attempt would be refused the same way.
    #[error(
        "the message is {size} bytes, over the broker's limit of {limit} bytes (RELAY_BROKER_MAX_MESSAGE; raise it \
         together with the broker's max_message_size)"
    )]
    TooLarge { size: usize, limit: usize },
}

impl PublishError {
    /// Label for the confirms metric's `result`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Nacked => "nack",
            Self::Unroutable(_) => "returned",
            Self::Timeout => "timeout",
            Self::Failed(_) => "error",
            Self::TooLarge { .. } => "too_large",
        }
    }

    /// Whether another attempt would fail the same way, however long it waited.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}

/// Publishes messages and reports whether they are durably stored.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Resolves `Ok` only once the message is durably stored and routed to at least one queue.
    async fn publish(&self, to: Destination, message: Message) -> Result<(), PublishError>;

    /// Whether a conversations log beside the events may keep a copy of one the broker refuses:
    /// only then is such an event withdrawn ([`Destination::Withdrawn`]).
    fn keeps_refused_copies(&self) -> bool {
        false
    }

    /// Whether a publish can succeed right now (drives `/readyz`).
    fn is_ready(&self) -> bool;

    /// [`Self::is_ready`] as it changes, for waiting on it. A publisher that can become unready
    /// overrides this; the default suits one that is always ready.
    fn readiness(&self) -> watch::Receiver<bool> {
        static ALWAYS: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();
        ALWAYS.get_or_init(|| watch::Sender::new(true)).subscribe()
    }
}

/// A broker that confirms every publish at once, for tests of what stands in front of one.
#[cfg(test)]
pub struct Confirms;

#[cfg(test)]
#[async_trait]
impl Publisher for Confirms {
    async fn publish(&self, _: Destination, _: Message) -> Result<(), PublishError> {
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("the queue is not available: {0}")]
    Unavailable(String),
}

/// Opens consumers on the worker's input queue.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Starts consuming with at most `prefetch` unacknowledged messages.
    async fn open(&self, prefetch: u16) -> Result<Box<dyn Consumer>, ConsumeError>;

    /// Takes one message that is ready now, without waiting for one: a single step of the
    /// worker ([`crate::worker::Worker::process_one`]), for tests and tools that drain a queue.
    async fn get(&self) -> Result<Option<Delivery>, ConsumeError>;
}

/// A stream of deliveries; dropping it gives unacknowledged messages back to the queue.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` when the consumer was cancelled or its connection lost.
    async fn next(&mut self) -> Option<Delivery>;
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), ConsumeError>;
    /// Gives the message back to the queue for another delivery.
    async fn requeue(&self) -> Result<(), ConsumeError>;
}

/// An acker that keeps what its delivery came through (a connection, a consumer) open until the
/// delivery is settled or dropped, as a consumer would.
pub(crate) struct Holding<T: Send + Sync> {
    pub acker: Box<dyn Acker>,
    pub _owner: T,
}

#[async_trait]
impl<T: Send + Sync> Acker for Holding<T> {
    async fn ack(&self) -> Result<(), ConsumeError> {
        self.acker.ack().await
    }
    async fn requeue(&self) -> Result<(), ConsumeError> {
        self.acker.requeue().await
    }
}

/// A message taken from the queue, to be settled exactly once.
pub struct Delivery {
    pub message: Message,
    /// The broker delivered it before (a crash or a requeue).
    pub redelivered: bool,
    pub acker: Box<dyn Acker>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_in_the_shortest_tier_that_holds_their_delay() {
        assert_eq!(retry_tier(Duration::from_millis(100)), (Duration::from_secs(1), Duration::from_millis(100)));
        assert_eq!(retry_tier(Duration::from_secs(5)), (Duration::from_secs(5), Duration::from_secs(5)));
        assert_eq!(retry_tier(Duration::from_secs(6)), (Duration::from_secs(30), Duration::from_secs(6)));
        assert_eq!(retry_tier(Duration::from_secs(99_999)), (Duration::from_secs(3600), Duration::from_secs(3600)));
    }
}
