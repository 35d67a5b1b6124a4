//! What the relay reads from a verified webhook: its type, id, conversation and environment.
//! The body itself is forwarded untouched.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::signature::VerifiedEvent;

/// AMQP `shortstr` fields (routing key, message id) hold at most 255 bytes.
const MAX_SHORT: usize = 255;

/// A verified webhook with the fields the relay routes on.
#[derive(Debug, Clone)]
pub struct Event {
    /// `X-PolyAI-Event-ID`, else `sha256:` + hex of the body, so a retried delivery keeps its id.
    pub id: String,
    /// `type`, else `event_type` (the alerts envelope).
    pub event_type: String,
    /// `data.conversation_id`, when the event is about a conversation.
    pub conversation_id: Option<String>,
    /// `data.environment` (`live`, `sandbox`, `pre-release`), when sent.
    pub environment: Option<String>,
    pub verified: VerifiedEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("body has no event type (`type` or `event_type`)")]
    NoEventType,
    #[error("event type is longer than 255 bytes")]
    TypeTooLong,
}

/// Why an event cannot be fetched by its conversation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConversationIdError {
    #[error("event has no data.conversation_id")]
    Missing,
    /// The reason never quotes the id: it goes into a message header and logs.
    #[error("data.conversation_id is not a conversation id: {0}")]
    NotAnId(&'static str),
}

/// The one check of a conversation id before anything (a URL, a file name) is built from it
/// (design §10).
pub fn check_conversation_id(id: &str) -> Result<(), ConversationIdError> {
    let why = if id.is_empty() {
        "it is empty"
    } else if id == "." || id == ".." {
        "it is a relative path (`.` or `..`)"
    } else if id.contains(['/', '\\']) {
        "it contains a path separator"
    } else if id.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(ConversationIdError::NotAnId(why))
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    conversation_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    environment: Option<&'a RawValue>,
}

/// A JSON string's value, or `None` for any other JSON kind: a field of the wrong type counts as absent.
fn string_of(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok()).filter(|s| !s.is_empty())
}

/// A JSON string's value, empty or not.
fn any_string_of(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

fn is_object(raw: &[u8]) -> bool {
    raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The fields the relay reads from an event body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub event_type: String,
    pub conversation_id: Option<String>,
    pub environment: Option<String>,
}

impl Fields {
    /// Reads an event body. The receiver calls it only through [`Event::parse`], after
    /// verification; the worker calls it on bodies that were verified before they were queued.
    pub fn read(body: &[u8]) -> Result<Self, EventError> {
        // serde would also read a struct from a JSON array; only an object is an event.
        if !is_object(body) {
            return Err(EventError::NotAnObject);
        }
        let envelope: Envelope = serde_json::from_slice(body).map_err(|_| EventError::NotAnObject)?;
        let event_type =
            string_of(envelope.kind).or_else(|| string_of(envelope.event_type)).ok_or(EventError::NoEventType)?;
        if event_type.len() > MAX_SHORT {
            return Err(EventError::TypeTooLong);
        }
        let data = envelope
            .data
            .filter(|d| is_object(d.get().as_bytes()))
            .and_then(|d| serde_json::from_str::<Data>(d.get()).ok());
        let (conversation_id, environment) = match data {
            // An empty id is kept, to be refused as one rather than read as absent.
            Some(data) => (any_string_of(data.conversation_id), string_of(data.environment)),
            None => (None, None),
        };
        Ok(Self { event_type, conversation_id, environment })
    }

    /// Events about a call must name it; others (alerts) are forwarded without a conversation.
    pub fn needs_conversation(&self) -> bool {
        self.event_type.starts_with("conversation.") || self.event_type.starts_with("handoff.")
    }

    /// The conversation to fetch: `None` for events about none, an error for an event that
    /// needs one and has none, or names one with something that is not an id.
    pub fn conversation(&self) -> Result<Option<&str>, ConversationIdError> {
        match (&self.conversation_id, self.needs_conversation()) {
            (Some(id), _) => check_conversation_id(id).map(|()| Some(id.as_str())),
            (None, false) => Ok(None),
            (None, true) => Err(ConversationIdError::Missing),
        }
    }
}

impl Event {
    /// Reads the routing fields of a verified body. Only a verified event can become an `Event`.
    pub fn parse(verified: VerifiedEvent, event_id_header: Option<&str>) -> Result<Self, EventError> {
        let Fields { event_type, conversation_id, environment } = Fields::read(verified.body())?;
        let id = event_id(event_id_header, verified.body());
        Ok(Self { id, event_type, conversation_id, environment, verified })
    }
}

/// The header when it can serve as an AMQP message id, else a digest of the body.
pub fn event_id(header: Option<&str>, body: &[u8]) -> String {
    match header.map(str::trim) {
        Some(id) if !id.is_empty() && id.len() <= MAX_SHORT && id.bytes().all(|b| b.is_ascii_graphic()) => {
            id.to_owned()
        }
        _ => format!("sha256:{}", hex::encode(Sha256::digest(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn verified(body: &str) -> VerifiedEvent {
        VerifiedEvent::trusted(Bytes::copy_from_slice(body.as_bytes()))
    }

    #[test]
    fn the_quickstart_envelope_yields_type_conversation_and_environment() {
        let body = r#"{"type":"conversation.completed","data":{"conversation_id":"CA1","environment":"live"}}"#;
        let event = Event::parse(verified(body), Some("evt_1")).unwrap();
        assert_eq!(event.event_type, "conversation.completed");
        assert_eq!(event.conversation_id.as_deref(), Some("CA1"));
        assert_eq!(event.environment.as_deref(), Some("live"));
        assert_eq!(event.id, "evt_1");
    }

    #[test]
    fn the_alerts_envelope_uses_event_type() {
        let body = r#"{"event_type":"alerts.triggered","alert":{"id":"ar_1"}}"#;
        let event = Event::parse(verified(body), None).unwrap();
        assert_eq!(event.event_type, "alerts.triggered");
        assert_eq!(event.conversation_id, None);
    }

    #[test]
    fn without_an_id_header_the_id_is_a_digest_of_the_body() {
        let event = Event::parse(verified(r#"{"type":"x"}"#), None).unwrap();
        let again = Event::parse(verified(r#"{"type":"x"}"#), Some("   ")).unwrap();
        assert!(event.id.starts_with("sha256:") && event.id.len() == 7 + 64);
        assert_eq!(event.id, again.id);
        let long = "e".repeat(300);
        assert!(Event::parse(verified(r#"{"type":"x"}"#), Some(&long)).unwrap().id.starts_with("sha256:"));
    }

    #[test]
    fn non_objects_and_missing_types_are_refused() {
        for body in ["[]", "\"x\"", "null", "{", "not json", r#"["conversation.completed"]"#, ""] {
            assert_eq!(Event::parse(verified(body), None).unwrap_err(), EventError::NotAnObject, "{body}");
        }
        for body in ["{}", r#"{"type":""}"#, r#"{"type":5}"#, r#"{"data":{"conversation_id":"CA1"}}"#] {
            assert_eq!(Event::parse(verified(body), None).unwrap_err(), EventError::NoEventType, "{body}");
        }
        let long = format!(r#"{{"type":"{}"}}"#, "t".repeat(256));
        assert_eq!(Event::parse(verified(&long), None).unwrap_err(), EventError::TypeTooLong);
    }

    #[test]
    fn ids_that_would_change_a_path_or_a_log_line_are_not_ids() {
        for good in ["CA7f3e", "conv_01.x", "a..b", ".x"] {
            assert_eq!(check_conversation_id(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\\b", "a\nb", "a\u{1b}[31m", "a\u{85}"] {
            assert!(matches!(check_conversation_id(bad), Err(ConversationIdError::NotAnId(_))), "{bad:?}");
        }
        let fields = |body: &str| Fields::read(body.as_bytes()).unwrap();
        let empty = fields(r#"{"type":"conversation.completed","data":{"conversation_id":""}}"#);
        assert!(matches!(empty.conversation(), Err(ConversationIdError::NotAnId(_))));
        let none = fields(r#"{"type":"conversation.completed","data":{}}"#);
        assert_eq!(none.conversation(), Err(ConversationIdError::Missing));
        let alert = fields(r#"{"event_type":"alerts.triggered"}"#);
        assert_eq!(alert.conversation(), Ok(None));
    }

    #[test]
    fn odd_data_fields_count_as_absent() {
        let body = r#"{"type":"conversation.completed","data":{"conversation_id":42,"environment":null}}"#;
        let event = Event::parse(verified(body), None).unwrap();
        assert_eq!((event.conversation_id, event.environment), (None, None));
        let event = Event::parse(verified(r#"{"type":"t","data":[1]}"#), None).unwrap();
        assert_eq!(event.conversation_id, None);
    }
}
