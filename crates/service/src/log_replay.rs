//! `log replay`: the events of a window that the conversations log holds but that never became a
//! record, put back into the worker's queue.
//!
//! For when the worker's queue lost what it held: deleted under a running relay (which declares it
//! again within seconds, but every event accepted meanwhile went only to the log), purged by
//! mistake, or a broker restored from a backup without it. Reconciliation cannot help there: it
//! counts an accepted webhook as known, and it knows nothing of handoffs. Here the events go back
//! as they came, with their ids, so a record made twice (an event that was only waiting in a delay
//! queue, say) is one consumers dedupe on `message_id`.

use std::collections::HashMap;

use lapin::{message::Delivery, Channel, Connection};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{AmqpTarget, Topology},
    dead::replayed,
    queue::{
        amqp::{convert, describe, exclusive, log, publish_confirmed, session},
        ledger::WITHDRAWN_TYPE,
        Message,
    },
};

/// What a replay is asked to do.
#[derive(Debug, Clone)]
pub struct LogReplayRequest {
    /// Events the relay took from this time on…
    pub since: OffsetDateTime,
    /// …up to this one.
    pub until: OffsetDateTime,
    /// Recorded in `x-relay-replay-reason`.
    pub reason: Option<String>,
    /// Find them; put nothing into the worker's queue.
    pub dry_run: bool,
}

#[derive(Debug, Default)]
pub struct LogReplaySummary {
    /// Put back into the worker's queue (or, on a dry run, that would be), in the log's order.
    pub replayed: Vec<Message>,
    /// Events of the window that have a record already: left alone.
    pub already_enriched: u64,
    /// The run stopped at a signal before it put back every event.
    pub interrupted: bool,
}

/// The log and the worker's queue, on a connection of their own.
pub struct LogReplay {
    connection: Connection,
    /// Confirm mode: the read's marker and every event put back are confirmed.
    channel: Channel,
    topology: Topology,
    log: String,
}

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("RELAY_CONVERSATIONS_LOG is off: there is no log to replay from")]
    NoLog,
    #[error("AMQP_URL: {0}")]
    Broker(String),
    #[error("another `log replay` is running against this broker; let it finish, then run this one again")]
    Running,
}

impl LogReplay {
    pub async fn open(target: &AmqpTarget, topology: Topology) -> Result<Self, OpenError> {
        let log = topology.conversations_log.clone().ok_or(OpenError::NoLog)?;
        let (connection, channel) =
            session::open_confirmed(target, &topology, "log replay").await.map_err(OpenError::Broker)?;
        // One replay at a time: two would each put back every event the other does. The lock is
        // the connection's, for as long as it is open.
        let lock = format!("{}.log-replay-lock", topology.enrich_queue);
        let refused = match exclusive::try_hold(&connection, &lock).await {
            Ok(Some(_)) => return Ok(Self { connection, channel, topology, log }),
            Ok(None) => OpenError::Running,
            Err(error) => OpenError::Broker(describe(&error)),
        };
        let _ = connection.close(200, "not replaying".into()).await;
        Err(refused)
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "done".into()).await;
    }

    pub async fn run(&self, request: &LogReplayRequest, stop: &CancellationToken) -> Result<LogReplaySummary, String> {
        let mut found = Unenriched::new(request.since.unix_timestamp(), request.until.unix_timestamp());
        // Read from the window's start to now, not to its end: a record comes after its event.
        let start = log::ReadFrom::Timestamp(request.since.unix_timestamp().max(0) as u64);
        let read = log::read_to_now(&self.connection, &self.channel, &self.log, start, |entry| {
            match Entry::of(&self.topology, entry) {
                Entry::Event => found.event(event_of(entry)),
                Entry::Record(id) => found.record(id),
                Entry::Other => {}
            }
        });
        // Stopping while reading leaves everything as it was: nothing is put back before the end.
        tokio::select! {
            read = read => read?,
            _ = stop.cancelled() => return Ok(LogReplaySummary { interrupted: true, ..Default::default() }),
        };
        let (events, already_enriched) = found.finish();
        let mut summary = LogReplaySummary { already_enriched, ..Default::default() };
        let now = OffsetDateTime::now_utc();
        for event in events {
            if stop.is_cancelled() {
                summary.interrupted = true;
                break;
            }
            if !request.dry_run {
                let (body, properties) =
                    convert::into_amqp(replayed(event.clone(), request.reason.as_deref(), now), None);
                // The default exchange routes straight to the worker's queue: raw-event
                // subscribers and the log see no copy.
                let queue = self.topology.enrich_queue.as_str();
                publish_confirmed(&self.channel, "".into(), queue.into(), &body, properties)
                    .await
                    .map_err(|error| format!("`{queue}`: {error}"))?;
            }
            summary.replayed.push(event);
        }
        Ok(summary)
    }
}

/// What an entry of the log is to a replay.
#[derive(Debug, PartialEq)]
enum Entry<'a> {
    /// An event the worker was given: a raw event (through the events exchange), or one
    /// reconciliation made (written to the log straight, through the default exchange).
    Event,
    /// A record, under its event's id (through the records exchange).
    Record(&'a str),
    /// A read's marker, or anything else.
    Other,
}

impl<'a> Entry<'a> {
    fn of(topology: &Topology, entry: &'a Delivery) -> Self {
        let kind = entry.properties.kind().as_ref().map(|t| t.as_str());
        let id = entry.properties.message_id().as_ref().map(|id| id.as_str()).unwrap_or_default();
        Self::sorted(topology, entry.exchange.as_str(), kind, id)
    }

    fn sorted(topology: &Topology, exchange: &str, kind: Option<&str>, id: &'a str) -> Self {
        if exchange == topology.conversations_exchange {
            Self::Record(id)
        } else if exchange == topology.events_exchange
            || (exchange.is_empty() && kind != Some(log::MARKER_TYPE) && kind != Some(WITHDRAWN_TYPE))
        {
            Self::Event
        } else {
            Self::Other
        }
    }
}

/// The event an entry holds, without what the stream adds on delivery (`x-stream-offset`).
fn event_of(entry: &Delivery) -> Message {
    let mut event = convert::message(entry.data.clone(), &entry.properties);
    event.headers.retain(|name, _| !name.starts_with("x-stream-"));
    event
}

/// The events of a window without a record, as the log is read in order.
struct Unenriched {
    since: i64,
    until: i64,
    /// Each event of the window by id, with its place in the log: `None` once it has a record.
    events: HashMap<String, (usize, Option<Message>)>,
    /// Ids of every record read, the window's or not (an event comes before its record, but two
    /// appends from different connections may reach the log the other way round).
    enriched: std::collections::HashSet<String>,
}

impl Unenriched {
    fn new(since: i64, until: i64) -> Self {
        Self { since, until, events: HashMap::new(), enriched: Default::default() }
    }

    /// An event, kept if the relay took it within the window and it has no record yet. A second
    /// copy of one (PolyAI's retry after a lost answer) changes nothing.
    fn event(&mut self, event: Message) {
        let taken = event.timestamp as i64;
        if taken < self.since || taken > self.until {
            return;
        }
        let place = self.events.len();
        let enriched = self.enriched.contains(&event.message_id);
        self.events.entry(event.message_id.clone()).or_insert((place, (!enriched).then_some(event)));
    }

    fn record(&mut self, message_id: &str) {
        if let Some((_, event)) = self.events.get_mut(message_id) {
            *event = None;
        }
        self.enriched.insert(message_id.to_owned());
    }

    /// The events left, in the log's order, and how many of the window's had a record.
    fn finish(self) -> (Vec<Message>, u64) {
        let already_enriched = self.events.values().filter(|(_, event)| event.is_none()).count() as u64;
        let mut left: Vec<_> = self.events.into_values().filter_map(|(place, event)| Some((place, event?))).collect();
        left.sort_by_key(|(place, _)| *place);
        (left.into_iter().map(|(_, event)| event).collect(), already_enriched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, taken: u64) -> Message {
        Message {
            body: bytes::Bytes::from_static(b"{}"),
            message_id: id.into(),
            event_type: "conversation.completed".into(),
            timestamp: taken,
            headers: Default::default(),
        }
    }

    fn ids(events: &[Message]) -> Vec<&str> {
        events.iter().map(|e| e.message_id.as_str()).collect()
    }

    #[test]
    fn events_of_the_window_without_a_record_are_left_in_the_logs_order() {
        let mut found = Unenriched::new(100, 200);
        found.event(event("before", 99));
        found.event(event("b", 100));
        found.event(event("enriched", 150));
        found.event(event("a", 160));
        found.record("enriched");
        found.event(event("b", 170)); // PolyAI's retry of `b`
        found.event(event("after", 201));
        found.record("before");
        let (left, already_enriched) = found.finish();
        assert_eq!(ids(&left), ["b", "a"]);
        assert_eq!(already_enriched, 1, "`before` is not the window's");
    }

    #[test]
    fn raw_and_reconciled_events_are_told_from_records_and_markers() {
        let topology = Topology::default();
        let sorted = |exchange: &str, kind: Option<&str>| Entry::sorted(&topology, exchange, kind, "id");
        assert_eq!(sorted(&topology.events_exchange, Some("conversation.completed")), Entry::Event);
        assert_eq!(sorted("", Some("conversation.reconciled")), Entry::Event);
        assert_eq!(sorted(&topology.conversations_exchange, Some("conversation.completed")), Entry::Record("id"));
        assert_eq!(sorted("", Some(log::MARKER_TYPE)), Entry::Other);
        assert_eq!(sorted("", Some(WITHDRAWN_TYPE)), Entry::Other, "the refused event itself is replayed");
        assert_eq!(sorted("another.exchange", Some("conversation.completed")), Entry::Other);
    }

    #[test]
    fn a_record_read_before_its_event_still_counts() {
        let mut found = Unenriched::new(0, 10);
        found.record("early");
        found.event(event("early", 5));
        let (left, already_enriched) = found.finish();
        assert!(left.is_empty());
        assert_eq!(already_enriched, 1);
    }
}
