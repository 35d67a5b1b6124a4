//! Reconciliation (design §9): page the v3 list over a window and put every finished
//! conversation the relay does not know into the worker's queue, so a call whose webhook never
//! came (PolyAI gave up, the endpoint was misregistered, a secret rotated on one side) still
//! reaches downstream, once.
//!
//! Owns the pass and the ledger each backend keeps of known conversations; knows nothing of how
//! the worker enriches what it is given.

mod amqp;
mod continuous;
mod embedded;
mod listing;

use async_trait::async_trait;
use serde_json::json;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_util::sync::CancellationToken;

pub use self::{
    amqp::AmqpLedger,
    continuous::{pass_now, run_continuously, start, LedgerSource},
    embedded::EmbeddedLedger,
    listing::Call,
};
use crate::{
    config::ProjectName,
    polyai::PolyaiClient,
    queue::{
        headers,
        ledger::{Known, POLYAI_RETRIES_FOR},
        Message,
    },
    telemetry::{names, Metrics},
};

/// The event type of reconciled events and records.
pub const EVENT_TYPE: &str = "conversation.reconciled";

/// How much earlier than the window the ledger is read: an event about a call is accepted after
/// the call started, but clocks (PolyAI's, the broker's) disagree a little.
const LEDGER_MARGIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// The event id (and message id) of a reconciled conversation: stable, so consumers dedupe.
pub fn event_id(conversation_id: &str) -> String {
    format!("reconcile:{conversation_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the ledger failed: {0}")]
    Ledger(String),
    #[error("listing conversations failed: {0}")]
    List(String),
    #[error("interrupted")]
    Interrupted,
}

/// What the relay knows, and where it puts what it did not.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Conversations with an accepted event or a published record of a finished call since
    /// `since` ([`crate::queue::ledger::known_conversation`]), and those whose every raw event so
    /// far was withdrawn.
    async fn known(&self, since: OffsetDateTime) -> Result<Known, ReconcileError>;

    /// Puts a reconcile event into the worker's queue and records it in the ledger, in that
    /// order: a crash between the two can only send it twice, never make it known unsent.
    async fn submit(&self, event: Message) -> Result<(), ReconcileError>;
}

/// One pass over one project's calls (the project of the client that lists them).
#[derive(Debug, Clone)]
pub struct Pass {
    /// Calls that started in `[start, end)`.
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    /// Only calls that finished before this (now minus the settle time).
    pub finished_before: OffsetDateTime,
    pub client_env: String,
    pub page_size: u32,
    /// Count; put nothing into the queue.
    pub dry_run: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassSummary {
    pub listed: u64,
    /// Put into the worker's queue (or, on a dry run, that would be).
    pub reconciled: u64,
    pub known: u64,
    pub in_progress: u64,
    /// Finished too recently: their webhook may still be on its way.
    pub settling: u64,
    pub other_environment: u64,
    /// Every webhook of the call so far refused by the broker, and PolyAI may still be retrying.
    pub left_to_polyai: u64,
    /// Conversation ids reconciled (or that would be), in order.
    pub ids: Vec<String>,
}

/// The event the relay makes for a call of `project` that no webhook delivered: shaped like a
/// webhook, and named by its project as the receiver names a webhook, so the worker fetches it
/// with that project's key and enriches it as one (design §12).
pub fn event(call: &Call, client_env: &str, project: &ProjectName, now: OffsetDateTime) -> Message {
    let environment = call.environment.as_deref().unwrap_or(client_env);
    let body = json!({"type": EVENT_TYPE, "data": {"conversation_id": call.id, "environment": environment}});
    Message {
        body: body.to_string().into_bytes().into(),
        message_id: event_id(&call.id),
        event_type: EVENT_TYPE.to_owned(),
        timestamp: now.unix_timestamp().max(0) as u64,
        headers: [
            (headers::RECEIVED_AT.to_owned(), now.format(&Rfc3339).unwrap_or_default()),
            (headers::PROJECT.to_owned(), project.to_string()),
        ]
        .into(),
    }
}

/// Whether PolyAI may still be retrying the webhook of a call that ended at `finished` (when
/// the list says), whose first refused copy was written at `first_refused` (Unix seconds): for
/// [`POLYAI_RETRIES_FOR`] after the later of the two, since the list's end of a call can be
/// early (a duration left out) and PolyAI sends its webhook after the call.
fn still_retried(finished: Option<OffsetDateTime>, first_refused: i64, now: OffsetDateTime) -> bool {
    let first_refused = OffsetDateTime::from_unix_timestamp(first_refused).unwrap_or(now);
    let from = finished.map_or(first_refused, |finished| finished.max(first_refused));
    now < from + POLYAI_RETRIES_FOR
}

/// Runs one pass over the calls of `client`'s project: reads what the ledger knows, pages the
/// list with the project's key, and submits the rest.
pub async fn reconcile(
    pass: &Pass,
    client: &PolyaiClient,
    ledger: &dyn Ledger,
    stop: &CancellationToken,
    metrics: &Metrics,
) -> Result<PassSummary, ReconcileError> {
    let Known { ids: mut known, withdrawn } = ledger.known(pass.start - LEDGER_MARGIN).await?;
    let now = OffsetDateTime::now_utc();
    let mut summary = PassSummary::default();
    let mut pages = listing::Pages::new(pass);
    while let Some(calls) = pages.next(client, stop).await? {
        for call in calls {
            summary.listed += 1;
            if call.in_progress {
                summary.in_progress += 1;
            } else if call.environment.as_deref().is_some_and(|env| env != pass.client_env) {
                summary.other_environment += 1;
            } else if call.finished_at().is_some_and(|finished| finished >= pass.finished_before) {
                summary.settling += 1;
            } else if withdrawn.get(&call.id).is_some_and(|first| still_retried(call.finished_at(), *first, now)) {
                // Every webhook of it so far was refused, and PolyAI may still be retrying: a
                // retry taken would make a second record of the call.
                summary.left_to_polyai += 1;
            } else if !known.insert(call.id.clone()) {
                // Known to the relay, or listed twice in this pass.
                summary.known += 1;
            } else {
                if !pass.dry_run {
                    if stop.is_cancelled() {
                        return Err(ReconcileError::Interrupted);
                    }
                    let project = client.project();
                    ledger.submit(event(&call, &pass.client_env, project, OffsetDateTime::now_utc())).await?;
                    let label = project.label();
                    metrics.record(|| metrics::counter!(names::RECONCILED, "project" => label).increment(1));
                    tracing::info!(
                        %project,
                        conversation_id = %call.id,
                        started_at = call.started_at_text.as_deref().unwrap_or("unknown"),
                        "reconciled a finished call that no webhook delivered"
                    );
                }
                summary.reconciled += 1;
                summary.ids.push(call.id);
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_is_left_to_polyai_for_six_hours_after_its_end_or_its_first_refusal() {
        let now = OffsetDateTime::from_unix_timestamp(100_000).unwrap();
        let hours = |n: i64| time::Duration::hours(n);
        let at = |t: OffsetDateTime| t.unix_timestamp();
        // Ended 7 h ago, refused then: PolyAI has given up.
        assert!(!still_retried(Some(now - hours(7)), at(now - hours(7)), now));
        // Ended 7 h ago by the list, but first refused 2 h ago: PolyAI sent it late, and retries.
        assert!(still_retried(Some(now - hours(7)), at(now - hours(2)), now));
        // Ended 2 h ago.
        assert!(still_retried(Some(now - hours(2)), at(now - hours(2)), now));
        // No end known: from the first refusal.
        assert!(still_retried(None, at(now - hours(5)), now));
        assert!(!still_retried(None, at(now - hours(6)), now));
    }
}
