//! The embedded queue's ledger of known conversations (a table in its store, written with every
//! accepted event and every record), read by reconciliation.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::EmbeddedQueue;

impl EmbeddedQueue {
    /// How long the ledger remembers a conversation (`RELAY_LOG_RETENTION`).
    pub fn set_ledger_retention(&self, retention: Duration) {
        let millis = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        self.shared.ledger_retention_ms.store(millis, std::sync::atomic::Ordering::Relaxed);
    }

    /// Conversations the relay knows (an event accepted or a record published) since `since`,
    /// forgetting those past the ledger's retention.
    pub async fn known_conversations(&self, since: SystemTime) -> anyhow::Result<HashSet<String>> {
        let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
        let retention = self.shared.ledger_retention_ms.load(std::sync::atomic::Ordering::Relaxed);
        let (since, horizon) = (millis(since), self.shared.clock.now_ms() - retention);
        let shared = self.shared.clone();
        let known = tokio::task::spawn_blocking(move || {
            shared.store.forget_known_before(horizon)?;
            shared.store.known_since(since)
        });
        Ok(known.await??)
    }
}
