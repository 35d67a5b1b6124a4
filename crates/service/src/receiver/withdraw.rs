//! Withdrawing a raw event the broker refused from the conversations log.
//!
//! The log is bound beside the worker's queue: when that queue refuses an event (a length limit
//! with `reject-publish`), the broker nacks it, the sender is answered 503, and the log may
//! still hold the copy. Reconciliation counts a call the log names as known, so should every
//! retry of that webhook be refused, the call would be known and never delivered. A withdrawal
//! entry after the refused copy cancels it ([`ledger::KnownConversations`]).

use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;
use time::OffsetDateTime;

use crate::queue::{headers, ledger, Destination, Message, Publisher};

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

    /// Sends the withdrawal in the background: the sender's 503 does not wait for it. One that
    /// fails leaves the refused copy counted, as before withdrawals; `log replay` recovers its
    /// call if every retry is refused.
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
            if let Err(error) = publisher.publish(Destination::Withdrawn, entry).await {
                tracing::warn!(
                    event_id = %message_id,
                    %error,
                    "a refused event could not be withdrawn from the conversations log: should PolyAI's retries all \
                     be refused too, reconciliation takes its call for known; `log replay` recovers it"
                );
            }
        });
    }
}
