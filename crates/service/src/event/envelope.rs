//! An event body's JSON, read for the fields the relay routes on, each field of another JSON
//! kind than a string counting as absent.
//!
//! `data`, which holds the bulk of a body, is read in the same pass as the rest when it is an
//! object; it used to be captured raw and parsed again, every body scanned twice (BENCHMARKS.md).
//! The string fields are captured raw and then read: serde_json fails on a number it is asked
//! to read that is out of `f64`'s range (`1e400`), but not on one it only skips or captures.

use std::fmt;

use serde::{
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::value::RawValue;

/// The fields read, each `None` when absent or not a string. A field named twice makes the
/// whole body unreadable, and within `data` the whole of `data` absent.
#[derive(Debug)]
pub struct Envelope {
    pub kind: Option<String>,
    pub event_type: Option<String>,
    /// `None` unless `data` is an object.
    pub data: Option<Data>,
}

#[derive(Debug, Default)]
pub struct Data {
    pub conversation_id: Option<String>,
    pub environment: Option<String>,
}

/// Reads an object's fields; `None` when the body is not an object or not JSON.
pub fn read(body: &[u8]) -> Option<Envelope> {
    // serde would also read a struct from a JSON array; only an object is an event.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let (kind, event_type, data) = match serde_json::from_slice::<Fields<DataIfObject>>(body) {
        Ok(read) => (read.kind, read.event_type, read.data.and_then(|data| data.0)),
        // `data` is a number out of range, the one value it cannot be read as: read again with
        // `data` skipped. Anything else unreadable fails again.
        Err(_) => {
            let read = serde_json::from_slice::<Fields<IgnoredAny>>(body).ok()?;
            (read.kind, read.event_type, None)
        }
    };
    Some(Envelope { kind: string(kind), event_type: string(event_type), data })
}

/// A JSON string's value, or `None` for any other kind.
fn string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
struct Fields<'a, D> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event_type: Option<&'a RawValue>,
    #[serde(default = "Option::default")]
    data: Option<D>,
}

/// `data`, read when it is an object and skipped when it is anything else.
struct DataIfObject(Option<Data>);

impl<'de> Deserialize<'de> for DataIfObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DataVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DataField {
    ConversationId,
    Environment,
    #[serde(other)]
    Other,
}

struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = DataIfObject;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(DataIfObject(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(DataIfObject(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(DataIfObject(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(DataIfObject(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(DataIfObject(None))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(DataIfObject(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(DataIfObject(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut data, mut seen, mut repeated) = (Data::default(), [false; 2], false);
        while let Some(field) = map.next_key::<DataField>()? {
            let (value, index) = match field {
                DataField::ConversationId => (&mut data.conversation_id, 0),
                DataField::Environment => (&mut data.environment, 1),
                DataField::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            repeated |= std::mem::replace(&mut seen[index], true);
            *value = string(map.next_value::<Option<&RawValue>>()?);
        }
        Ok(DataIfObject((!repeated).then_some(data)))
    }
}
