//! [`Message`] to and from AMQP properties.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};

use crate::queue::Message;

/// Properties of design §4: persistent JSON with the event id, type and the relay's headers.
pub fn properties(message: &Message, expiration: Option<Duration>) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in &message.headers {
        headers.insert(ShortString::from(name.as_str()), AMQPValue::LongString(LongString::from(value.as_bytes())));
    }
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        // 2 = persistent: with a quorum queue the message is on a majority's disk before the confirm.
        .with_delivery_mode(2)
        .with_message_id(message.message_id.as_str().into())
        .with_type(message.event_type.as_str().into())
        .with_timestamp(message.timestamp)
        .with_app_id("polyai-relay".into())
        .with_headers(headers);
    match expiration {
        // Per-message TTL, in milliseconds as a string (the AMQP 0-9-1 form).
        Some(delay) => properties.with_expiration(delay.as_millis().max(1).to_string().into()),
        None => properties,
    }
}

/// Reads back what [`properties`] wrote; headers of other kinds (`x-death`, …) are skipped.
pub fn message(body: Vec<u8>, properties: &BasicProperties) -> Message {
    let mut headers = BTreeMap::new();
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                _ => continue,
            };
            headers.insert(name.as_str().to_owned(), text);
        }
    }
    Message {
        body: Bytes::from(body),
        message_id: properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        event_type: properties.kind().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        timestamp: properties.timestamp().unwrap_or_default(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_round_trip_through_amqp_properties() {
        let original = Message {
            body: Bytes::from_static(b"{}"),
            message_id: "evt_1".into(),
            event_type: "conversation.completed".into(),
            timestamp: 1_795_000_000,
            headers: BTreeMap::from([("x-relay-attempts".to_owned(), "2".to_owned())]),
        };
        let props = properties(&original, Some(Duration::from_millis(1500)));
        assert_eq!(props.expiration().as_ref().map(|e| e.as_str()), Some("1500"));
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(message(b"{}".to_vec(), &props), original);
    }
}
