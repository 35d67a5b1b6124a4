//! The enriched record of design §4.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const SCHEMA: &str = "polyai-relay.enriched/1";

/// What downstream consumers read. `event` and `conversation` are embedded byte for byte.
#[derive(Serialize)]
pub struct EnrichedRecord<'a> {
    pub schema: &'static str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The relay project the event belongs to (design §12): a consumer of several projects'
    /// records tells them apart without reading headers.
    pub project: &'a str,
    pub received_at: Option<&'a str>,
    pub fetched_at: String,
    pub event: &'a RawValue,
    pub conversation: Option<&'a RawValue>,
    pub transcript_visible: bool,
    /// Where the recording was saved, or why there is none; `null` when audio download is off
    /// or the conversation is not a voice call.
    pub audio: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TurnCount {
    #[serde(default)]
    num_turns: Option<i64>,
    #[serde(default)]
    turns: Option<Vec<serde::de::IgnoredAny>>,
}

/// False when the conversation reports turns but carries none: the project's transcript setting is off.
pub fn transcript_visible(conversation: &RawValue) -> bool {
    match serde_json::from_str::<TurnCount>(conversation.get()) {
        Ok(TurnCount { num_turns: Some(n), turns }) if n > 0 => turns.is_some_and(|t| !t.is_empty()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn transcripts_are_hidden_only_when_turns_are_reported_but_missing() {
        let full = include_str!("../../../../tests/fixtures/conversation-v3.json");
        let hidden = include_str!("../../../../tests/fixtures/conversation-v3-transcript-hidden.json");
        assert!(transcript_visible(&raw(full)));
        assert!(!transcript_visible(&raw(hidden)));
        assert!(transcript_visible(&raw(r#"{"num_turns":0,"turns":[]}"#)));
        assert!(transcript_visible(&raw(r#"{"id":"x"}"#)));
    }
}
