//! What the relay reads from a verified webhook: its type, id, conversation and environment.
//! The body itself is forwarded untouched.

mod envelope;

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

/// A string field's value, unless it is empty.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
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
        let envelope = envelope::read(body).ok_or(EventError::NotAnObject)?;
        let event_type =
            non_empty(envelope.kind).or_else(|| non_empty(envelope.event_type)).ok_or(EventError::NoEventType)?;
        if event_type.len() > MAX_SHORT {
            return Err(EventError::TypeTooLong);
        }
        let (conversation_id, environment) = match envelope.data {
            // An empty id is kept, to be refused as one rather than read as absent.
            Some(data) => (data.conversation_id, non_empty(data.environment)),
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
    fn escaped_strings_are_read_unescaped_and_nested_values_skipped() {
        let body = r#"{"extra":[{"type":"no"}],"type":"conversation.\u0063ompleted","data":{"padding":{"conversation_id":"no"},"conversation_id":"CA\"1","list":[1,[2]],"environment":"li\u0076e"}}"#;
        let fields = Fields::read(body.as_bytes()).unwrap();
        assert_eq!(fields.event_type, "conversation.completed");
        assert_eq!(fields.conversation_id.as_deref(), Some("CA\"1"));
        assert_eq!(fields.environment.as_deref(), Some("live"));
    }

    #[test]
    fn a_field_named_twice_is_not_read_as_either_value() {
        let twice = r#"{"type":"a","type":"b"}"#;
        assert_eq!(Fields::read(twice.as_bytes()).unwrap_err(), EventError::NotAnObject);
        let in_data = r#"{"type":"t","data":{"conversation_id":"CA1","environment":"live","conversation_id":"CA2"}}"#;
        let fields = Fields::read(in_data.as_bytes()).unwrap();
        assert_eq!((fields.conversation_id, fields.environment), (None, None));
        for body in [r#"{"type":"t","data":{"x":1,"x":2}}"#, r#"{"type":"t","data":{"conversation_id":"CA1"},"x":1}"#] {
            assert!(Fields::read(body.as_bytes()).is_ok(), "{body}");
        }
    }

    #[test]
    fn numbers_out_of_range_where_a_field_is_read_count_as_absent() {
        // serde_json fails on such a number when asked to read it: a signed event must not be
        // refused for one where the relay expects a string or an object.
        let fields = |body: &str| Fields::read(body.as_bytes());
        let data = fields(r#"{"type":"t","data":{"environment":1e400,"conversation_id":"CA1"}}"#).unwrap();
        assert_eq!((data.conversation_id.as_deref(), data.environment), (Some("CA1"), None));
        let data = fields(r#"{"type":"t","data":{"conversation_id":-1e400}}"#).unwrap();
        assert_eq!(data.conversation_id, None);
        assert_eq!(fields(r#"{"type":"t","data":1e400}"#).unwrap().conversation_id, None);
        assert_eq!(fields(r#"{"type":1e400,"event_type":"t"}"#).unwrap().event_type, "t");
        assert_eq!(fields(r#"{"type":"t","data":1e400,"type":"u"}"#).unwrap_err(), EventError::NotAnObject);
    }

    /// What the relay reads from an event, from the body parsed whole: the meaning of
    /// [`Fields::read`], written the plainest way.
    fn read_from_value(body: &serde_json::Value) -> Result<Fields, EventError> {
        let envelope = body.as_object().ok_or(EventError::NotAnObject)?;
        let string = |value: Option<&serde_json::Value>| value.and_then(serde_json::Value::as_str).map(str::to_owned);
        let non_empty = |value| string(value).filter(|s: &String| !s.is_empty());
        let event_type = non_empty(envelope.get("type"))
            .or_else(|| non_empty(envelope.get("event_type")))
            .ok_or(EventError::NoEventType)?;
        if event_type.len() > MAX_SHORT {
            return Err(EventError::TypeTooLong);
        }
        let data = envelope.get("data").and_then(serde_json::Value::as_object);
        Ok(Fields {
            event_type,
            conversation_id: string(data.and_then(|d| d.get("conversation_id"))),
            environment: non_empty(data.and_then(|d| d.get("environment"))),
        })
    }

    mod any_envelope {
        use proptest::prelude::*;
        use serde_json::{json, Map, Value};

        use super::*;

        /// Stands for a number out of `f64`'s range, which serde_json's values cannot hold: the
        /// body's text has `1e400` where this string was, and the reference reads it as `null`.
        const OUT_OF_RANGE: &str = "\u{2}OUT_OF_RANGE";

        fn with_out_of_range_numbers_as_null(value: &Value) -> Value {
            match value {
                Value::String(s) if s == OUT_OF_RANGE => Value::Null,
                Value::Array(items) => items.iter().map(with_out_of_range_numbers_as_null).collect(),
                Value::Object(fields) => Value::Object(
                    fields.iter().map(|(k, v)| (k.clone(), with_out_of_range_numbers_as_null(v))).collect(),
                ),
                other => other.clone(),
            }
        }

        /// A string as an event's fields may hold it: empty, escaped, or too long for a type.
        fn string() -> impl Strategy<Value = Value> {
            prop_oneof![Just(String::new()), "[a-z.\"\\\u{1}é\u{1F600}]{1,12}", "t{250,260}"].prop_map(Value::from)
        }

        /// Any JSON value.
        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                Just(Value::from(OUT_OF_RANGE)),
                string(),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    proptest::collection::btree_map("[a-z_]{1,16}", inner, 0..4)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        /// An object with each of `keys` present or not, most often a string, among other fields.
        fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
            let field = || prop_oneof![3 => string(), 1 => value()];
            let fields = keys.iter().map(move |key| proptest::option::of(field()).prop_map(move |v| (*key, v)));
            (fields.collect::<Vec<_>>(), proptest::collection::btree_map("[a-z]{1,6}", value(), 0..3)).prop_map(
                |(fields, others)| {
                    let mut object: Map<String, Value> = others.into_iter().collect();
                    object.extend(fields.into_iter().filter_map(|(key, v)| Some((key.to_owned(), v?))));
                    object
                },
            )
        }

        fn envelope() -> impl Strategy<Value = Value> {
            let data =
                prop_oneof![3 => object(&["conversation_id", "environment"]).prop_map(Value::Object), 1 => value()];
            (object(&["type", "event_type"]), proptest::option::of(data)).prop_map(|(mut envelope, data)| {
                if let Some(data) = data {
                    envelope.insert("data".to_owned(), data);
                }
                Value::Object(envelope)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            #[test]
            fn reads_what_the_whole_body_says(body in prop_oneof![envelope(), value()]) {
                let expected = read_from_value(&with_out_of_range_numbers_as_null(&body));
                let out_of_range = serde_json::to_string(OUT_OF_RANGE).unwrap();
                let text = serde_json::to_string(&body).unwrap().replace(&out_of_range, "1e400");
                prop_assert_eq!(Fields::read(text.as_bytes()), expected.clone(), "{}", text);
                let spaced = serde_json::to_string_pretty(&json!(body)).unwrap().replace(&out_of_range, "-1e400");
                prop_assert_eq!(Fields::read(spaced.as_bytes()), expected, "{}", spaced);
            }
        }
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
