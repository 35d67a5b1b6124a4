//! Forwards spooled events to the broker, oldest first, each removed only after its confirm.
//!
//! Events go in batches: the oldest [`BATCH`] (or fewer, up to [`BATCH_BYTES`]) are published at once (their confirms pipelined),
//! the confirmed ones are removed in one transaction, then the next batch. So an event reaches
//! the broker before any event spooled a batch or more after it, and a crash at any point leaves
//! every unconfirmed event in the spool: at worst one is sent twice, with its message id, never lost.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::Spool;
use crate::queue::{embedded::store::stored_size, Destination, PublishError, Publisher};

/// Events published together: enough to keep the broker's confirms pipelined, few enough that
/// "oldest first" stays close to exact.
const BATCH: usize = 64;

/// A batch stops growing at this many bytes: events can be up to RELAY_MAX_BODY each, and a
/// batch is held in memory until confirmed.
const BATCH_BYTES: u64 = 4 << 20;

/// How long one publish may wait for its confirm. One that takes longer stays in the spool and is
/// sent again; if the broker confirms the first copy after all, that is a duplicate, not a loss.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the drainer looks whether the broker takes publishes again, while it does not.
const BROKER_POLL: Duration = Duration::from_millis(100);

/// The pause after a batch the broker did not wholly confirm (a nack, a timeout, a lost
/// connection), so a broker in trouble is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The safety net of the wake-up on each spooled event.
const IDLE_CHECK: Duration = Duration::from_secs(5);

pub struct Drainer {
    spool: Spool,
    publisher: Arc<dyn Publisher>,
    shutdown: CancellationToken,
}

impl Drainer {
    pub fn new(spool: Spool, publisher: Arc<dyn Publisher>, shutdown: CancellationToken) -> Self {
        Self { spool, publisher, shutdown }
    }

    /// Runs until shutdown. A batch in flight at shutdown is abandoned: its events stay in the
    /// spool and go out after the restart.
    pub async fn run(self) {
        let mut draining = false;
        loop {
            if self.spool.events() == 0 {
                if draining {
                    tracing::info!("spool drained: every spooled event is in the broker");
                    draining = false;
                }
                if !self.pause(self.spool.spooled(), IDLE_CHECK).await {
                    return;
                }
                continue;
            }
            if !self.publisher.is_ready() {
                if !self.pause(std::future::pending::<()>(), BROKER_POLL).await {
                    return;
                }
                continue;
            }
            if !draining {
                tracing::info!(events = self.spool.events(), "the broker takes publishes: draining the spool");
                draining = true;
            }
            let complete = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                complete = self.forward_batch() => complete,
            };
            if !complete && !self.pause(std::future::pending::<()>(), RETRY_PAUSE).await {
                return;
            }
        }
    }

    /// Waits for `wake` or `limit`; false on shutdown.
    async fn pause(&self, wake: impl std::future::Future<Output = ()>, limit: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = wake => true,
            _ = tokio::time::sleep(limit) => true,
        }
    }

    /// Publishes the oldest batch and removes what was confirmed; true if all of it was.
    async fn forward_batch(&self) -> bool {
        let batch = match self.spool.oldest(BATCH, BATCH_BYTES).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "the spool cannot be read; trying again");
                return false;
            }
        };
        let publishes = batch.into_iter().map(|stored| async move {
            let size = stored_size(&stored.message);
            let id = stored.message.message_id.clone();
            let publish = self.publisher.publish(Destination::Events, stored.message);
            let result = tokio::time::timeout(CONFIRM_TIMEOUT, publish).await.unwrap_or(Err(PublishError::Timeout));
            (stored.seq, size, id, result)
        });
        let mut confirmed = Vec::new();
        let mut failed = 0usize;
        for (seq, size, id, result) in join_all(publishes).await {
            match result {
                Ok(()) => confirmed.push((seq, size)),
                Err(error) => {
                    failed += 1;
                    // Kept in the spool. A return means no queue is bound for the event's type
                    // (the topology or RELAY_EVENTS changed): it waits until one is.
                    tracing::warn!(event_id = %id, %error, "a spooled event was not confirmed; it stays in the spool");
                }
            }
        }
        if let Err(error) = self.spool.remove(confirmed).await {
            // Confirmed but still on disk: they will be sent again (duplicates, same message id).
            tracing::error!(%error, "confirmed events could not be removed from the spool; they will be sent again");
            return false;
        }
        failed == 0
    }
}
