//! One dead letter as `dead list` shows it, and the message `dead replay` makes of it.

use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    event::Fields,
    queue::{headers, Destination, Message},
    telemetry::trace_context,
};

/// What an operator needs to decide about a dead letter (design §9's `--json` fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub event_id: String,
    pub event_type: String,
    pub conversation_id: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    /// RFC 3339; `None` for dead letters written before the relay recorded it.
    pub dead_at: Option<String>,
}

impl DeadLetter {
    /// Reads a dead-lettered message. `dead_at` is the backend's own knowledge of when it died
    /// (the broker's `x-death` time), used when the worker's header is missing.
    pub fn from_message(message: &Message, broker_dead_at: Option<String>, broker_error: Option<String>) -> Self {
        Self {
            event_id: message.message_id.clone(),
            event_type: message.event_type.clone(),
            conversation_id: Fields::read(&message.body).ok().and_then(|f| f.conversation_id),
            error: message.header(headers::ERROR).map(str::to_owned).or(broker_error),
            attempts: message.attempts(),
            dead_at: message.header(headers::DEAD_AT).map(str::to_owned).or(broker_dead_at),
        }
    }

    /// One line of the table `dead list` prints.
    pub fn line(&self) -> String {
        format!(
            "{}  {}  {}  {}  attempts={}  {}",
            self.dead_at.as_deref().unwrap_or("-"),
            self.event_id,
            self.event_type,
            self.conversation_id.as_deref().unwrap_or("-"),
            self.attempts,
            self.error.as_deref().unwrap_or("-"),
        )
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<String>),
}

impl Selection {
    pub fn takes(&self, event_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.iter().any(|id| id == event_id),
        }
    }
}

/// Where `dead replay` sends a dead letter: an event to the worker's queue, a record (rescued from a
/// return, [`headers::RECORD`]) back to the conversations exchange it was meant for.
pub fn replay_destination(message: &Message) -> Destination {
    if message.header(headers::RECORD).is_some() {
        Destination::Conversations
    } else {
        Destination::Events
    }
}

/// The event as the worker should see it again: attempts reset, the last error and death time
/// dropped, and when (and why) it was replayed recorded. A replay starts a trace of its own: the
/// trace the event was first in may be days old. A record is treated the same: it keeps its
/// other headers, and loses the dead-letter ones and its mark ([`replay_destination`] read it
/// first).
pub fn replayed(mut message: Message, reason: Option<&str>, now: OffsetDateTime) -> Message {
    let dropped = [
        headers::RECORD,
        headers::ATTEMPTS,
        headers::NOT_FOUND_ATTEMPTS,
        headers::FAILING[0],
        headers::FAILING[1],
        headers::FAILING[2],
        headers::ERROR,
        headers::DEAD_AT,
        headers::REPLAY_REASON,
        // A dead letter the broker made (its delivery limit) may still hold the turn of calls
        // long past: replayed with it, the event would call at once, outside its project's pace.
        headers::TURN,
        trace_context::TRACEPARENT,
        trace_context::TRACESTATE,
    ];
    for name in dropped {
        message.headers.remove(name);
    }
    message.headers.insert(headers::REPLAYED_AT.to_owned(), now.format(&Rfc3339).unwrap_or_default());
    if let Some(reason) = reason {
        message.headers.insert(headers::REPLAY_REASON.to_owned(), reason.to_owned());
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn dead() -> Message {
        Message {
            body: bytes::Bytes::from_static(br#"{"type":"conversation.completed","data":{"conversation_id":"CA1"}}"#),
            message_id: "evt_1".into(),
            event_type: "conversation.completed".into(),
            timestamp: 1,
            headers: BTreeMap::from([
                (headers::ATTEMPTS.to_owned(), "5".to_owned()),
                (headers::NOT_FOUND_ATTEMPTS.to_owned(), "5".to_owned()),
                (headers::ERROR.to_owned(), "404".to_owned()),
                (headers::DEAD_AT.to_owned(), "2026-11-29T04:00:00Z".to_owned()),
                (headers::RECEIVED_AT.to_owned(), "2026-11-29T03:00:00Z".to_owned()),
                (headers::TURN.to_owned(), "1795000000000".to_owned()),
                (headers::FAILING_SINCE.to_owned(), "1794000000000".to_owned()),
                (headers::FAILED_AT.to_owned(), "1795000000000".to_owned()),
            ]),
        }
    }

    #[test]
    fn a_dead_letter_shows_its_id_type_conversation_error_attempts_and_time() {
        let letter = DeadLetter::from_message(&dead(), None, None);
        assert_eq!(letter.conversation_id.as_deref(), Some("CA1"));
        assert_eq!((letter.attempts, letter.error.as_deref()), (5, Some("404")));
        assert_eq!(letter.dead_at.as_deref(), Some("2026-11-29T04:00:00Z"));
    }

    #[test]
    fn a_replay_resets_the_attempts_and_records_when_and_why() {
        let message = replayed(dead(), Some("API fixed"), OffsetDateTime::UNIX_EPOCH);
        assert_eq!((message.attempts(), message.not_found_attempts()), (0, 0));
        assert_eq!(message.header(headers::ERROR), None);
        assert_eq!(message.header(headers::DEAD_AT), None);
        assert_eq!(message.header(headers::TURN), None, "it takes its turn anew");
        let failing = (message.header(headers::FAILING_SINCE), message.header(headers::FAILED_AT));
        assert_eq!(failing, (None, None), "an outage it waited out is over");
        assert_eq!(message.header(headers::REPLAYED_AT), Some("1970-01-01T00:00:00Z"));
        assert_eq!(message.header(headers::REPLAY_REASON), Some("API fixed"));
        assert_eq!(message.header(headers::RECEIVED_AT), Some("2026-11-29T03:00:00Z"));
    }

    #[test]
    fn a_record_is_replayed_to_the_records_without_its_mark() {
        assert_eq!(replay_destination(&dead()), Destination::Events);
        let mut record = dead();
        record.headers.insert(headers::RECORD.to_owned(), "true".to_owned());
        assert_eq!(replay_destination(&record), Destination::Conversations);
        let replayed = replayed(record, None, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(replayed.header(headers::RECORD), None, "downstream sees the record as the worker sent it");
    }

    #[test]
    fn a_replay_starts_a_trace_of_its_own() {
        let mut traced = dead();
        traced
            .headers
            .insert(trace_context::TRACEPARENT.into(), format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16)));
        traced.headers.insert(trace_context::TRACESTATE.into(), "vendor=1".into());
        let message = replayed(traced, None, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(message.header(trace_context::TRACEPARENT), None);
        assert_eq!(message.header(trace_context::TRACESTATE), None);
    }
}
