//! Forwards spooled events to the broker, oldest first, each removed only after its confirm.
//!
//! Events go in batches: the oldest [`BATCH`] (or fewer, up to [`BATCH_BYTES`]) are published at once (their confirms pipelined),
//! the confirmed ones are removed in one transaction, then the next batch. So an event reaches
//! the broker before any event spooled a batch or more after it, unless the broker refused it
//! (then it is tried again once the events behind it have gone; one that did not reach the
//! broker, a connection lost or a confirm late, is tried again first), and a crash at any point leaves
//! every unconfirmed event in the spool: at worst one is sent twice, with its message id, never lost.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{Spool, SpoolError};
use crate::{
    log_limit::LogLimit,
    queue::{embedded::store::stored_size, Destination, PublishError, Publisher},
};

/// Events published together: enough to keep the broker's confirms pipelined, few enough that
/// "oldest first" stays close to exact.
pub(super) const BATCH: usize = 64;

/// A batch stops growing at this many bytes: events can be up to RELAY_MAX_BODY each, and a
/// batch is held in memory until confirmed.
const BATCH_BYTES: u64 = 4 << 20;

/// How long one publish may wait for its confirm. One that takes longer stays in the spool and is
/// sent again; if the broker confirms the first copy after all, that is a duplicate, not a loss.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a batch the broker did not wholly confirm (a nack, a timeout, a lost
/// connection), so a broker in trouble is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Times in a row a batch may start at the same unconfirmed event before the drainer goes past
/// it: a confirm that never comes in time (a broker that slow, an event that breaks the channel)
/// would otherwise have the same batch sent again and again and the rest of the spool never.
const TRIES_BEFORE_PASSING_OVER: u32 = 3;

/// What forwarding one batch came to.
enum Forwarded {
    /// No event after the cursor.
    Nothing,
    /// Every event of the batch confirmed and removed.
    All,
    /// Not all of it: some stay in the spool, or the spool failed. `resume_after`: where the
    /// next batch starts, when the batch was read; `last`: the batch's last event.
    Partly { resume_after: Option<i64>, last: Option<i64> },
}

pub struct Drainer {
    spool: Spool,
    publisher: Arc<dyn Publisher>,
    shutdown: CancellationToken,
    /// An event the broker goes on refusing is offered again every [`RETRY_PAUSE`]: its warning
    /// is said once per kind of refusal and interval, with the count left unsaid.
    refusals: LogLimit,
    /// The same for the spool's own failures, tried again as often.
    failures: LogLimit,
}

impl Drainer {
    pub fn new(spool: Spool, publisher: Arc<dyn Publisher>, shutdown: CancellationToken) -> Self {
        Self { spool, publisher, shutdown, refusals: LogLimit::default(), failures: LogLimit::default() }
    }

    /// Runs until shutdown. A batch in flight at shutdown is abandoned: its events stay in the
    /// spool and go out after the restart.
    pub async fn run(self) {
        let mut draining = false;
        // Where the next batch starts: past a batch the broker did not wholly take, so events it
        // keeps refusing (their type no longer bound, say) cannot hold back the ones behind them;
        // back to the start once the end is reached.
        let mut after_seq = 0;
        // How many batches in a row started at `after_seq` without getting past it.
        let mut tries_here = 0;
        let mut level = self.spool.level();
        let mut ready = self.publisher.readiness();
        // Events the broker confirmed that the spool could not remove (a disk gone read-only):
        // removed before anything more is forwarded, so that they are not sent again and again.
        let mut unremoved: Vec<(i64, u64)> = Vec::new();
        loop {
            if !unremoved.is_empty() {
                match self.spool.remove(&unremoved).await {
                    Ok(()) => unremoved.clear(),
                    Err(error) => {
                        self.failed("remove", &error);
                        if !self.until(tokio::time::sleep(RETRY_PAUSE)).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            if self.spool.events() == 0 {
                if draining {
                    tracing::info!("spool drained: every spooled event is in the broker");
                    draining = false;
                }
                // The spool's own watch: woken by the next event spooled, whenever it comes.
                if !self.until(level.wait_for(|level| level.events > 0)).await {
                    return;
                }
                continue;
            }
            // Marked seen before asking, so a change between the question and the wait still wakes it.
            ready.borrow_and_update();
            if !self.publisher.is_ready() {
                // Woken when the broker's readiness changes (its supervisor reports every
                // connection, loss and block), then asked again.
                let changed = async {
                    if ready.changed().await.is_err() {
                        // A publisher whose readiness never changes: nothing to wake on.
                        std::future::pending::<()>().await;
                    }
                };
                if !self.until(changed).await {
                    return;
                }
                continue;
            }
            if !draining {
                tracing::info!(events = self.spool.events(), "the broker takes publishes: draining the spool");
                draining = true;
            }
            let forwarded = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                forwarded = self.forward_batch(after_seq, &mut unremoved) => forwarded,
            };
            let pause = match forwarded {
                Forwarded::All => {
                    tries_here = 0;
                    false
                }
                Forwarded::Nothing if after_seq > 0 => {
                    (after_seq, tries_here) = (0, 0);
                    false
                }
                // Counted but not there: not worth a busy loop.
                Forwarded::Nothing => true,
                Forwarded::Partly { resume_after, last } => {
                    let resume_after = resume_after.unwrap_or(after_seq);
                    tries_here = if resume_after == after_seq { tries_here + 1 } else { 0 };
                    after_seq = match last {
                        Some(last) if tries_here >= TRIES_BEFORE_PASSING_OVER => {
                            tries_here = 0;
                            last
                        }
                        _ => resume_after,
                    };
                    true
                }
            };
            if pause && !self.until(tokio::time::sleep(RETRY_PAUSE)).await {
                return;
            }
        }
    }

    /// Waits for `wake`; false on shutdown.
    async fn until<T>(&self, wake: impl std::future::Future<Output = T>) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = wake => true,
        }
    }

    /// Counts and logs a failure of the spool itself (its disk), at most once per interval.
    fn failed(&self, step: &'static str, error: &SpoolError) {
        self.spool.count_failure(step);
        if let Some(unsaid) = self.failures.admit(step) {
            match step {
                "read" => tracing::error!(%error, unsaid, "the spool cannot be read; trying again"),
                _ => {
                    tracing::error!(%error, unsaid, "events the broker confirmed cannot be removed from the spool; nothing more is forwarded until they are")
                }
            }
        }
    }

    /// Publishes the oldest batch after `after_seq` and removes what was confirmed; what was
    /// confirmed but could not be removed is left in `unremoved`.
    async fn forward_batch(&self, after_seq: i64, unremoved: &mut Vec<(i64, u64)>) -> Forwarded {
        let batch = match self.spool.oldest(after_seq, BATCH, BATCH_BYTES).await {
            Ok(batch) => batch,
            Err(error) => {
                self.failed("read", &error);
                return Forwarded::Partly { resume_after: None, last: None };
            }
        };
        let Some(last) = batch.last().map(|stored| stored.seq) else { return Forwarded::Nothing };
        let publishes = batch.into_iter().map(|stored| async move {
            let size = stored_size(&stored.message);
            let id = stored.message.message_id.clone();
            let publish = self.publisher.publish(Destination::Events, stored.message);
            let result = tokio::time::timeout(CONFIRM_TIMEOUT, publish).await.unwrap_or(Err(PublishError::Timeout));
            (stored.seq, size, id, result)
        });
        let mut confirmed = Vec::new();
        let mut failed = 0usize;
        // Past the batch, unless an event did not get to the broker's answer: the next batch
        // starts with the oldest of those, so that a connection lost mid-batch does not send
        // the whole rest of the spool ahead of them.
        let mut resume_after = last;
        for (seq, size, id, result) in join_all(publishes).await {
            match result {
                Ok(()) => confirmed.push((seq, size)),
                Err(error) => {
                    failed += 1;
                    if !refused(&error) {
                        resume_after = resume_after.min(seq - 1);
                    }
                    // Kept in the spool. A return means no queue is bound for the event's type
                    // (the topology or RELAY_EVENTS changed): it waits until one is.
                    if let Some(unsaid) = self.refusals.admit(error.label()) {
                        tracing::warn!(event_id = %id, %error, unsaid, "a spooled event was not confirmed; it stays in the spool");
                    }
                }
            }
        }
        if let Err(error) = self.spool.remove(&confirmed).await {
            // In the broker but still on disk: sent again only if the process stops before they
            // are removed (duplicates then, with their message ids).
            self.failed("remove", &error);
            unremoved.extend(confirmed);
            return Forwarded::Partly { resume_after: Some(resume_after), last: Some(last) };
        }
        if failed == 0 {
            Forwarded::All
        } else {
            Forwarded::Partly { resume_after: Some(resume_after), last: Some(last) }
        }
    }
}

/// Whether the broker answered the publish with a refusal of that event (a nack, a return) or
/// the publisher refused to send it: it may go on being refused, so the events behind it go
/// first. The other failures (the connection, a confirm late) say nothing of the event.
fn refused(error: &PublishError) -> bool {
    match error {
        PublishError::Nacked | PublishError::Unroutable(_) | PublishError::TooLarge { .. } => true,
        PublishError::Unavailable | PublishError::Timeout | PublishError::Failed(_) => false,
    }
}
