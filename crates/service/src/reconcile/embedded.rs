//! The ledger on the embedded queue: a table in its SQLite store, written with every accepted
//! event and every record (see `queue::embedded`).

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Ledger, ReconcileError};
use crate::queue::{embedded::EmbeddedQueue, ledger::Known, Destination, Message, Publisher};

pub struct EmbeddedLedger {
    queue: EmbeddedQueue,
}

impl EmbeddedLedger {
    /// `retention`: how long the ledger remembers a conversation (`RELAY_LOG_RETENTION`).
    pub fn new(queue: EmbeddedQueue, retention: Duration) -> Self {
        queue.set_ledger_retention(retention);
        Self { queue }
    }
}

#[async_trait]
impl Ledger for EmbeddedLedger {
    async fn known(&self, since: OffsetDateTime) -> Result<Known, ReconcileError> {
        let since = std::time::SystemTime::from(since);
        let ids = self.queue.known_conversations(since).await.map_err(|e| ReconcileError::Ledger(format!("{e:#}")))?;
        // The store takes an event and its ledger entry in one transaction: nothing is withdrawn.
        Ok(Known { ids, withdrawn: Default::default() })
    }

    async fn submit(&self, event: Message) -> Result<(), ReconcileError> {
        // On the embedded queue the worker's input is the events table, and inserting there
        // records the conversation in the ledger in the same step.
        self.queue.publish(Destination::Events, event).await.map_err(|e| ReconcileError::Ledger(e.to_string()))
    }
}
