//! The embedded queue's ledger of known conversations (a table in its store, written with every
//! accepted event and every record), read by reconciliation.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{now_ms, EmbeddedQueue};

impl EmbeddedQueue {
    /// Conversations the relay knows (an event accepted or a record published) since `since`,
    /// forgetting those not seen within `retention`.
    pub async fn known_conversations(&self, since: SystemTime, retention: Duration) -> anyhow::Result<HashSet<String>> {
        let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
        let (since, horizon) = (millis(since), now_ms() - retention.as_millis() as i64);
        let shared = self.shared.clone();
        let known = tokio::task::spawn_blocking(move || {
            shared.store.forget_known_before(horizon)?;
            shared.store.known_since(since)
        });
        Ok(known.await??)
    }
}
