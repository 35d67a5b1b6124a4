//! A queue message independent of the backend: body plus the properties design §4 lists.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Header names the relay sets and reads.
pub mod headers {
    /// `X-PolyAI-Timestamp` as sent, when it was.
    pub const POLYAI_TIMESTAMP: &str = "x-polyai-timestamp";
    /// Which signature form matched (`timestamped` or `body`).
    pub const SIGNATURE_SCHEME: &str = "x-relay-signature-scheme";
    /// When the receiver took the webhook, RFC 3339.
    pub const RECEIVED_AT: &str = "x-relay-received-at";
    /// The project (design §12) the event belongs to: the receiver sets it from the webhook's
    /// path, the worker fetches with that project's key, and stamps it on everything it
    /// publishes for the event. A raw event without it belongs to the first project.
    pub const PROJECT: &str = "x-relay-project";
    /// Attempts the worker made so far; travels with the message so it survives restarts.
    pub const ATTEMPTS: &str = "x-relay-attempts";
    /// Of those, the ones answered 404: counted apart, so that 5xx answers during an API outage
    /// do not use up the retries of a conversation not yet ingested once the API is back.
    pub const NOT_FOUND_ATTEMPTS: &str = "x-relay-not-found-attempts";
    /// When the event's calls first failed with no answer from the API (a 5xx, a 408, a timeout,
    /// no connection), unix milliseconds: how long it has been waiting out an outage.
    pub const FAILING_SINCE: &str = "x-relay-failing-since";
    /// When they last did, unix milliseconds: the next such failure counts as an attempt only if
    /// the API answered another call of the project since (`worker::outage`).
    pub const FAILED_AT: &str = "x-relay-failed-at";
    /// Which of its calls those were, `conversation` or `recording`: each kind has runs of its own.
    pub const FAILING_CALL: &str = "x-relay-failing-call";
    /// The headers of a run of failures with no answer: the record and a replay drop them.
    pub const FAILING: [&str; 3] = [FAILING_SINCE, FAILED_AT, FAILING_CALL];
    /// The last error of a dead-lettered event.
    pub const ERROR: &str = "x-relay-error";
    /// When the API calls a worker reserved for the event under `RELAY_API_RATE` are due, unix
    /// milliseconds: set while the event waits for them in a delay queue, removed from what
    /// replaces it otherwise (a retry, a dead letter, the record).
    pub const TURN: &str = "x-relay-turn";
    /// When the event was dead-lettered, RFC 3339.
    pub const DEAD_AT: &str = "x-relay-dead-at";
    /// When `dead replay` or `log replay` sent the event back to the worker, RFC 3339.
    pub const REPLAYED_AT: &str = "x-relay-replayed-at";
    /// The operator's `--reason` for a replay, when given.
    pub const REPLAY_REASON: &str = "x-relay-replay-reason";
    /// On a dead letter that is an enriched record, not an event: a record no queue took, whose
    /// return reached another publish (`queue::amqp::misdelivered`). `dead replay` sends it back
    /// to the conversations exchange: the worker could not read it as an event.
    pub const RECORD: &str = "x-relay-record";
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub body: Bytes,
    /// The event id: consumers dedupe on it.
    pub message_id: String,
    /// The event type: the AMQP `type` property and the routing key.
    pub event_type: String,
    /// Unix seconds.
    pub timestamp: u64,
    pub headers: BTreeMap<String, String>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Attempts recorded so far (0 for a fresh event).
    pub fn attempts(&self) -> u32 {
        self.count(headers::ATTEMPTS)
    }

    /// Of [`Message::attempts`], those answered 404.
    pub fn not_found_attempts(&self) -> u32 {
        self.count(headers::NOT_FOUND_ATTEMPTS)
    }

    fn count(&self, name: &str) -> u32 {
        self.header(name).and_then(|a| a.parse().ok()).unwrap_or(0)
    }

    /// A small message for tests of what carries messages, not of what they say.
    #[cfg(test)]
    pub fn sample() -> Self {
        Self {
            body: Bytes::from_static(b"{}"),
            message_id: "evt".into(),
            event_type: "t".into(),
            timestamp: 0,
            headers: BTreeMap::new(),
        }
    }
}
