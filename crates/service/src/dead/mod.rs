//! Dead letters: listing them without removing any, and replaying them where they were going:
//! an event to the worker's queue, a rescued record to the conversations exchange (design §9).
//! Owns how each backend's dead letters are read and moved; knows nothing of the API or of what
//! the worker does with a replayed event.

mod amqp;
mod embedded;
mod letter;
mod progress;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use self::{
    amqp::AmqpDeadLetters,
    embedded::EmbeddedDeadLetters,
    letter::{replay_destination, replayed, DeadLetter, Selection},
    progress::ReplayProgress,
};

#[derive(Debug, thiserror::Error)]
pub enum DeadError {
    #[error("the broker failed: {0}")]
    Broker(String),
    #[error("the broker did not take the message: {0}")]
    NotConfirmed(String),
    #[error("no queue took the message: {0}")]
    Unroutable(String),
    #[error("the embedded queue failed: {0}")]
    Store(String),
}

/// What a replay is asked to do.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub selection: Selection,
    /// Recorded in `x-relay-replay-reason`.
    pub reason: Option<String>,
    /// Count what would be replayed; move nothing.
    pub dry_run: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Sent back where they were going (or, on a dry run, that would be).
    pub replayed: u64,
    /// Dead letters left after the run: on RabbitMQ, of those there when it started (letters
    /// dead-lettered meanwhile are behind them, for the next run).
    pub left: u64,
    /// The run stopped at a signal before it went through every dead letter.
    pub interrupted: bool,
}

/// A backend's dead letters.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead letters, oldest first. None is removed, and none comes closer to any
    /// delivery limit.
    async fn list(&self, limit: Option<usize>) -> Result<Vec<DeadLetter>, DeadError>;

    /// Sends the selected dead letters back where they were going ([`replay_destination`]), each
    /// removed from the dead letters only once its replay is durably stored; one no queue takes
    /// stays. Stops between two dead letters when
    /// `stop` is cancelled: an interrupted replay loses nothing and doubles nothing beyond
    /// at-least-once.
    async fn replay(
        &self,
        request: &ReplayRequest,
        progress: &ReplayProgress,
        stop: &CancellationToken,
    ) -> Result<ReplaySummary, DeadError>;

    /// Closes the broker connection, if any, politely.
    async fn close(&self) {}
}
