//! Which conversation a ledger entry is about: a raw event (`data.conversation_id`), or an
//! enriched record (its `event`'s conversation, else `conversation.id`).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;

/// The type of the entry that follows, in a log that holds every raw event routed to it, a raw
/// event of a finished call the broker refused (a nack): a queue bound beside the log (the
/// worker's, full under a length limit) refused it while the log kept it. It carries the refused
/// event's id and body. The sender was answered 503 and PolyAI retries; should every retry be
/// refused, reconciliation must not take the call for known and leave it for good.
pub const WITHDRAWN_TYPE: &str = "relay.withdrawn";

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

/// The conversations a log, read in order, makes known: each entry of a finished call counts,
/// and a withdrawal cancels the refused event it follows. A call is known while any of its
/// entries counts: a retry of a refused event that the broker took, or its record, keeps it known.
#[derive(Debug, Default)]
pub struct KnownConversations {
    /// Entries that count, and when (Unix seconds) the last entry naming the call was written.
    by_id: HashMap<String, Counted>,
}

#[derive(Debug)]
struct Counted {
    entries: u32,
    written: i64,
}

impl KnownConversations {
    /// Reads one entry of the log, of AMQP type `event_type`, written at `written`.
    pub fn note(&mut self, event_type: &str, body: &[u8], written: i64) {
        if let Some(id) = known_conversation(event_type, body) {
            let counted = self.by_id.entry(id).or_insert(Counted { entries: 0, written });
            counted.entries += 1;
            counted.written = counted.written.max(written);
        } else if event_type == WITHDRAWN_TYPE {
            // A refused event read before the window began was never counted: nothing to cancel.
            if let Some(counted) = conversation_of(body).and_then(|id| self.by_id.get_mut(&id)) {
                counted.entries = counted.entries.saturating_sub(1);
            }
        }
    }

    /// Forgets calls last named before `horizon` (Unix seconds), and those no entry counts for.
    pub fn forget_before(&mut self, horizon: i64) {
        self.by_id.retain(|_, counted| counted.written >= horizon && counted.entries > 0);
    }

    /// The conversations known.
    pub fn ids(&self) -> HashSet<String> {
        self.by_id.iter().filter(|(_, counted)| counted.entries > 0).map(|(id, _)| id.clone()).collect()
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

    #[test]
    fn a_withdrawal_cancels_the_refused_event_it_follows_and_nothing_else() {
        let completed =
            |id: &str| format!(r#"{{"type":"conversation.completed","data":{{"conversation_id":"{id}"}}}}"#);
        let handoff = br#"{"type":"handoff.created","data":{"conversation_id":"CAh"}}"#;
        let mut known = KnownConversations::default();
        // Refused, then refused again on PolyAI's retry: not known.
        for _ in 0..2 {
            known.note("conversation.completed", completed("CAr").as_bytes(), 10);
            known.note(WITHDRAWN_TYPE, completed("CAr").as_bytes(), 10);
        }
        // Refused, then taken on the retry: known.
        known.note("conversation.completed", completed("CAt").as_bytes(), 10);
        known.note(WITHDRAWN_TYPE, completed("CAt").as_bytes(), 10);
        known.note("conversation.completed", completed("CAt").as_bytes(), 20);
        // A withdrawal whose event came before the read began, then the call's record.
        known.note(WITHDRAWN_TYPE, completed("CAw").as_bytes(), 10);
        known.note("conversation.completed", completed("CAw").as_bytes(), 30);
        // A withdrawal naming a call nothing counted cancels nothing.
        known.note(WITHDRAWN_TYPE, handoff, 10);
        known.note("handoff.created", handoff, 10);
        assert_eq!(known.ids(), HashSet::from(["CAt".to_owned(), "CAw".to_owned()]));

        known.forget_before(25);
        assert_eq!(known.ids(), HashSet::from(["CAw".to_owned()]), "CAt was last named at 20");
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
