//! Withdrawing a raw event the relay answered 503 after publishing from the conversations log.
//!
//! The log is bound beside the worker's queue: when that queue refuses an event (a length limit
//! with `reject-publish`), the broker nacks it and the sender is answered 503, but the log may
//! have kept the copy; so may it when the broker does not confirm in time. Reconciliation counts
//! a call the log names as known, so should every retry of that webhook meet the same, the call
//! would be known and never delivered. A withdrawal entry takes the copy back
//! ([`ledger::KnownConversations`]); a call whose every copy was taken back is reconciled once
//! PolyAI has stopped retrying it.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    log_limit::{LogLimit, INTERVAL},
    queue::{headers, ledger, publish_until_confirmed, Destination, Message, Publisher},
};

/// How long a withdrawal is tried for, through a broker's short outage.
const PATIENCE: Duration = Duration::from_secs(60);

/// Withdrawals not sent are said once per interval: they come with a broker in trouble.
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

    /// Sends the withdrawal in the background, through short broker outages: the sender's 503
    /// does not wait for it. One that cannot be sent leaves the copy counted; `log replay`
    /// recovers its call should every retry be refused.
    pub fn send(self, publisher: Arc<dyn Publisher>) {
        let message_id = self.message_id.clone();
        let entry = Message {
            body: self.body,
            message_id: self.message_id,
            event_type: ledger::WITHDRAWN_TYPE.to_owned(),
            timestamp: OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
            headers: BTreeMap::from_iter(self.project.map(|project| (headers::PROJECT.to_owned(), project))),
        };
        tokio::spawn(async move {
            // Not the relay's shutdown: a withdrawal cut short by it is one not sent.
            let never = CancellationToken::new();
            let sent = publish_until_confirmed(publisher.as_ref(), Destination::Withdrawn, &entry, PATIENCE, &never);
            if let Err(error) = sent.await {
                if let Some(unsaid) = FAILURES.admit("withdrawal") {
                    tracing::warn!(
                        event_id = %message_id,
                        %error,
                        unsaid,
                        "an event answered 503 could not be withdrawn from the conversations log: should PolyAI's \
                         retries all be refused too, reconciliation takes its call for known; `log replay` recovers it"
                    );
                }
            }
        });
    }
}
