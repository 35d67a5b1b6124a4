//! Which conversation a ledger entry is about: a raw event (`data.conversation_id`), or an
//! enriched record (its `event`'s conversation, else `conversation.id`).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use serde::Deserialize;
use serde_json::value::RawValue;

/// The type of the entry that withdraws, in a log that takes every raw event routed to it, a
/// raw event of a finished call the broker refused (a nack: a queue bound beside the log, the
/// worker's, full under a length limit), the sender answered 503. The log may hold that copy all
/// the same. PolyAI retries; should every retry be refused, reconciliation must not take the call
/// for known and leave it for good. It carries the refused event's id and body, and comes
/// through the default exchange.
pub const WITHDRAWN_TYPE: &str = "relay.withdrawn";

/// How long PolyAI may still be retrying a webhook after a delivery of it (about five and a half
/// hours after the first): a call whose every webhook so far was withdrawn counts as known that
/// long after the later of its end and its first refusal, since a retry is likelier than
/// reconciliation to deliver it without a second record (under `reconcile:{id}`).
pub const POLYAI_RETRIES_FOR: Duration = Duration::from_secs(6 * 3600);

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    conversation_id: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    id: Option<String>,
}

/// Either shape, each part kept raw (a record's conversation is large and mostly irrelevant
/// here); a part of another type counts as absent rather than failing the whole entry.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    conversation: Option<&'a RawValue>,
}

fn read<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<T> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// The event types whose entries make their conversation known to reconciliation: a finished
/// call's webhook, and the events the relay makes for finished calls itself (reconcile, backfill).
/// A record carries the type of the event it enriched, so the same list covers records.
///
/// Not a `handoff.created`, nor any type this list does not name: such an event can come while
/// the call is still going, and counting it would leave the finished call to a webhook that may
/// never come. A type left out at worst sends a finished call again, under its `reconcile:` id.
const FINISHED_CALL_TYPES: [&str; 3] = ["conversation.completed", "conversation.reconciled", "conversation.backfilled"];

/// Whether an event of `event_type` says its call has ended.
pub fn ends_a_call(event_type: &str) -> bool {
    FINISHED_CALL_TYPES.contains(&event_type)
}

/// The conversation an entry of `event_type` makes known to reconciliation, if any: see
/// [`FINISHED_CALL_TYPES`].
pub fn known_conversation(event_type: &str, body: &[u8]) -> Option<String> {
    ends_a_call(event_type).then(|| conversation_of(body)).flatten()
}

/// One entry of the conversations log, as the ledger reads it.
pub struct LogEntry<'a> {
    /// Its AMQP `type`.
    pub event_type: &'a str,
    pub message_id: &'a str,
    pub body: &'a [u8],
    /// When it was written, Unix seconds.
    pub written: i64,
    pub through: Through,
}

/// The exchange an entry came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// The raw events' exchange: a webhook's event, perhaps one the broker refused.
    Events,
    /// The default exchange: the relay's own entries (reconcile events, withdrawals, markers).
    Straight,
    /// Any other: the records' exchange.
    Other,
}

/// What a ledger knows of the calls it names.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Known {
    /// Calls with an accepted event or a record: known.
    pub ids: HashSet<String>,
    /// Calls whose every raw event so far was withdrawn, with when (Unix seconds) the first
    /// withdrawal was written: known only while PolyAI may still retry them
    /// ([`POLYAI_RETRIES_FOR`]).
    pub withdrawn: HashMap<String, i64>,
}

/// The conversations a log, read in order, makes known. A record, or an event the relay made
/// (reconcile, backfill), makes its call known for good. A raw event counts under its message
/// id, and a withdrawal takes back one of that id's raw events, whichever of the two the log
/// holds first; a call is known while any of its raw events counts.
#[derive(Debug, Default)]
pub struct KnownConversations {
    by_id: HashMap<String, Mentions>,
}

#[derive(Debug, Default)]
struct Mentions {
    /// A record or an event the relay made names the call.
    firm: bool,
    /// Raw events by message id, less withdrawals: one that goes below zero is a withdrawal read
    /// before the copy it withdraws.
    raw: Vec<(String, i32)>,
    /// When (Unix seconds) the last entry naming the call was written.
    written: i64,
    /// When the first withdrawal was written, if any.
    first_withdrawn: Option<i64>,
}

impl Mentions {
    fn add(&mut self, message_id: &str, by: i32) {
        match self.raw.iter_mut().find(|(id, _)| id == message_id) {
            Some((_, count)) => *count += by,
            None => self.raw.push((message_id.to_owned(), by)),
        }
    }

    fn counted(&self) -> bool {
        self.firm || self.raw.iter().any(|(_, count)| *count > 0)
    }
}

impl KnownConversations {
    /// Reads the log's next entry.
    pub fn note(&mut self, entry: LogEntry<'_>) {
        let withdrawal = entry.through == Through::Straight && entry.event_type == WITHDRAWN_TYPE;
        let id =
            if withdrawal { conversation_of(entry.body) } else { known_conversation(entry.event_type, entry.body) };
        let Some(id) = id else { return };
        let mentions = self.by_id.entry(id).or_default();
        mentions.written = mentions.written.max(entry.written);
        match (withdrawal, entry.through) {
            (true, _) => {
                mentions.add(entry.message_id, -1);
                let first = mentions.first_withdrawn.get_or_insert(entry.written);
                *first = (*first).min(entry.written);
            }
            (false, Through::Events) => mentions.add(entry.message_id, 1),
            (false, _) => mentions.firm = true,
        }
    }

    /// Forgets calls last named before `horizon` (Unix seconds).
    pub fn forget_before(&mut self, horizon: i64) {
        self.by_id.retain(|_, mentions| mentions.written >= horizon);
    }

    pub fn known(&self) -> Known {
        let mut known = Known::default();
        for (id, mentions) in &self.by_id {
            if mentions.counted() {
                known.ids.insert(id.clone());
            } else if let Some(first) = mentions.first_withdrawn {
                known.withdrawn.insert(id.clone(), first);
            }
        }
        known
    }
}

/// The conversation id an event or a record names, if any.
pub fn conversation_of(body: &[u8]) -> Option<String> {
    let entry: Entry = serde_json::from_slice(body).ok()?;
    let id = read::<Data>(entry.data)
        .and_then(|d| d.conversation_id)
        .or_else(|| read::<Event>(entry.event).and_then(|e| e.data).and_then(|d| d.conversation_id))
        .or_else(|| read::<Conversation>(entry.conversation).and_then(|c| c.id));
    id.filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_events_and_records_name_their_conversation() {
        let raw = br#"{"type":"conversation.completed","data":{"conversation_id":"CA1"}}"#;
        assert_eq!(conversation_of(raw).as_deref(), Some("CA1"));
        let record = br#"{"schema":"polyai-relay.enriched/1","event":{"type":"x","data":{"conversation_id":"CA2"}},"conversation":{"id":"CA2"}}"#;
        assert_eq!(conversation_of(record).as_deref(), Some("CA2"));
        let alert_record = br#"{"event":{"event_type":"alerts.triggered"},"conversation":null}"#;
        assert_eq!(conversation_of(alert_record), None);
        assert_eq!(conversation_of(br#"{"data":{"conversation_id":7}}"#), None);
        assert_eq!(conversation_of(b"not json"), None);
    }

    fn completed(id: &str) -> String {
        format!(r#"{{"type":"conversation.completed","data":{{"conversation_id":"{id}"}}}}"#)
    }

    /// `entries` of (AMQP type, message id, conversation, written, exchange).
    fn read(entries: &[(&str, &str, &str, i64, Through)]) -> KnownConversations {
        let mut known = KnownConversations::default();
        for (event_type, message_id, conversation, written, through) in entries {
            let body = completed(conversation);
            let body = body.as_bytes();
            known.note(LogEntry { event_type, message_id, body, written: *written, through: *through });
        }
        known
    }

    #[test]
    fn a_withdrawal_takes_back_its_own_raw_event_whichever_the_log_holds_first() {
        let done = "conversation.completed";
        let (raw, straight, record) = (Through::Events, Through::Straight, Through::Other);
        let known = read(&[
            // Refused, then refused again on PolyAI's retry.
            (done, "evt-r", "CAr", 10, raw),
            (WITHDRAWN_TYPE, "evt-r", "CAr", 10, straight),
            (done, "evt-r", "CAr", 20, raw),
            (WITHDRAWN_TYPE, "evt-r", "CAr", 20, straight),
            // Refused, then taken on the retry.
            (done, "evt-t", "CAt", 10, raw),
            (WITHDRAWN_TYPE, "evt-t", "CAt", 10, straight),
            (done, "evt-t", "CAt", 20, raw),
            // The withdrawal written before the copy it withdraws (another channel).
            (WITHDRAWN_TYPE, "evt-o", "CAo", 30, straight),
            (done, "evt-o", "CAo", 30, raw),
            // Taken under one id; another id's withdrawal takes nothing from it.
            (done, "evt-k", "CAk", 10, raw),
            (WITHDRAWN_TYPE, "evt-other", "CAk", 10, straight),
            // A withdrawal with no copy in the log (the log refused it, the worker's queue took
            // it): its record, under the same id, still makes the call known.
            (WITHDRAWN_TYPE, "evt-s", "CAs", 10, straight),
            (done, "evt-s", "CAs", 40, record),
            // A record of that type, not through the default exchange: not a withdrawal.
            (WITHDRAWN_TYPE, "evt-x", "CAx", 10, record),
        ]);
        let known = known.known();
        let mut ids: Vec<&str> = known.ids.iter().map(String::as_str).collect();
        ids.sort();
        assert_eq!(ids, ["CAk", "CAs", "CAt"]);
        assert_eq!(known.withdrawn, HashMap::from([("CAr".to_owned(), 10), ("CAo".to_owned(), 30)]));
    }

    #[test]
    fn calls_last_named_before_the_horizon_are_forgotten() {
        let (done, raw) = ("conversation.completed", Through::Events);
        let mut known = read(&[(done, "evt-1", "CA1", 10, raw), (done, "evt-2", "CA2", 30, raw)]);
        known.forget_before(20);
        assert_eq!(known.known().ids, HashSet::from(["CA2".to_owned()]));
    }

    #[test]
    fn only_the_events_of_finished_calls_make_their_conversation_known() {
        let completed = br#"{"type":"conversation.completed","data":{"conversation_id":"CA1"}}"#;
        assert_eq!(known_conversation("conversation.completed", completed).as_deref(), Some("CA1"));
        let reconciled = br#"{"event":{"type":"conversation.reconciled","data":{"conversation_id":"CA2"}}}"#;
        assert_eq!(known_conversation("conversation.reconciled", reconciled).as_deref(), Some("CA2"));
        let backfilled = br#"{"conversation":{"id":"CA3"}}"#;
        assert_eq!(known_conversation("conversation.backfilled", backfilled).as_deref(), Some("CA3"));
        let handoff = br#"{"type":"handoff.created","data":{"conversation_id":"CA4"}}"#;
        assert_eq!(known_conversation("handoff.created", handoff), None, "a handoff comes mid-call");
        assert_eq!(known_conversation("conversation.started", completed), None, "a type of unknown meaning");
    }
}
