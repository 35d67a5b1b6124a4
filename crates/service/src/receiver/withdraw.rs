//! Withdrawing from the conversations log a raw event the broker refused.
//!
//! The log is bound beside the worker's queue: when that queue refuses an event (a length limit
//! with `reject-publish`), the broker nacks it and the sender is answered 503, but the log may
//! have kept the copy. Reconciliation counts a call the log names as known, so should every
//! retry of that webhook be refused, the call would be known and never delivered. A withdrawal
//! entry takes the copy back ([`ledger::KnownConversations`]); a call whose every copy was taken
//! back is reconciled once PolyAI has stopped retrying it.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::{
    backoff::Backoff,
    log_limit::{LogLimit, INTERVAL},
    queue::{headers, ledger, Destination, Message, PublishError, Publisher},
};

/// How long a withdrawal is tried for, its confirm waited for included.
const PATIENCE: Duration = Duration::from_secs(60);

/// The pause between tries.
const BETWEEN_ATTEMPTS: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Withdrawals not written are said once per interval: they come with a broker in trouble.
static FAILURES: LazyLock<LogLimit> = LazyLock::new(|| LogLimit::new(INTERVAL));

/// What a refusal of one event withdraws: kept aside before the event is published, only for
/// the events reconciliation counts.
pub struct Withdrawal {
    body: Bytes,
    message_id: String,
    project: Option<String>,
}

impl Withdrawal {
    pub fn of(event: &Message) -> Option<Self> {
        ledger::ends_a_call(&event.event_type).then(|| Self {
            body: event.body.clone(),
            message_id: event.message_id.clone(),
            project: event.header(headers::PROJECT).map(str::to_owned),
        })
    }

    /// Sends the withdrawal in the background, in a task of `tasks`: the sender's 503 does not
    /// wait for it, a shutdown does.
    pub fn send(self, publisher: Arc<dyn Publisher>, tasks: &TaskTracker) {
        tasks.spawn(self.write(publisher));
    }

    /// Writes the withdrawal, through a broker's short outage. One that cannot be written
    /// leaves the copy counted; `log replay` recovers its call should every retry be refused.
    /// Only a withdrawal never sent is tried again: one sent and not answered in time may still
    /// be written, and a second would take back an accepted copy too.
    async fn write(self, publisher: Arc<dyn Publisher>) {
        let entry = Message {
            body: self.body,
            message_id: self.message_id,
            event_type: ledger::WITHDRAWN_TYPE.to_owned(),
            timestamp: OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
            headers: BTreeMap::from_iter(self.project.map(|project| (headers::PROJECT.to_owned(), project))),
        };
        let give_up = Instant::now() + PATIENCE;
        let mut failures = 0;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, publisher.publish(Destination::Withdrawn, entry.clone())).await;
            let error = match attempt {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(_) => PublishError::Timeout,
            };
            failures += 1;
            let wait = BETWEEN_ATTEMPTS.delay(failures);
            if !matches!(error, PublishError::Unavailable) || Instant::now() + wait > give_up {
                if let Some(unsaid) = FAILURES.admit("withdrawal") {
                    tracing::warn!(
                        event_id = %entry.message_id,
                        %error,
                        unsaid,
                        "an event the broker refused could not be withdrawn from the conversations log: should \
                         PolyAI's retries all be refused too, reconciliation takes its call for known; `log replay` \
                         recovers it"
                    );
                }
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}
