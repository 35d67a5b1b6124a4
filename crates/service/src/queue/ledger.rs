//! Which conversation a ledger entry is about: a raw event (`data.conversation_id`), or an
//! enriched record (its `event`'s conversation, else `conversation.id`).

use serde::Deserialize;
use serde_json::value::RawValue;

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
