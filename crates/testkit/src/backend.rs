//! The queue a test runs on: real RabbitMQ, or the embedded queue in a temporary directory.
//! Behaviour tests run on both through [`both_backends!`].

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

use polyai_relay::{
    config::{AmqpTarget, BrokerSettings, EventTypes},
    queue::{
        embedded::{EmbeddedQueue, CONVERSATIONS_FILE, DEAD_FILE},
        RETRY_TIERS,
    },
};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{value::RawValue, Value};
use tokio::sync::watch;

use crate::{
    broker::{TestBroker, MESSAGE_WAIT},
    poll::poll_until,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Amqp,
    Embedded,
}

/// Defines each `async fn name(backend: Backend)` once and a `#[tokio::test]` for it in
/// modules `amqp` and `embedded`.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($backend:ident: Backend) $body:block)*) => {
        $(async fn $name($backend: $crate::backend::Backend) $body)*
        mod amqp {
            $(#[tokio::test] async fn $name() { super::$name($crate::backend::Backend::Amqp).await })*
        }
        mod embedded {
            $(#[tokio::test] async fn $name() { super::$name($crate::backend::Backend::Embedded).await })*
        }
    };
}
pub use both_backends;

/// An enriched record as a consumer sees it.
pub struct Record {
    pub json: Value,
    /// The record as written, for what must be kept byte for byte.
    pub raw: Vec<u8>,
    /// The AMQP delivery, on RabbitMQ (properties and routing key).
    pub delivery: Option<lapin::message::Delivery>,
}

/// A dead letter, whichever backend wrote it.
pub struct DeadLetter {
    pub event_id: String,
    pub error: Option<String>,
    pub attempts: Option<String>,
    /// The raw event, byte for byte.
    pub event: Vec<u8>,
}

/// A directory that is deleted with the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    // Not `Default`: each call makes a directory of its own on disk.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("relay-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub enum TestQueue {
    Amqp(Box<TestBroker>),
    Embedded {
        dir: TempDir,
        records_read: Mutex<usize>,
        dead_read: Mutex<usize>,
        /// What a relay running in this process on `dir` says of its writes to the files
        /// ([`EmbeddedQueue::written`]); unset while none does (a relay binary writes them).
        written: OnceLock<watch::Receiver<u64>>,
    },
}

impl TestQueue {
    pub async fn new(backend: Backend, event_types: EventTypes) -> Self {
        match backend {
            Backend::Amqp => Self::Amqp(Box::new(TestBroker::new(event_types).await)),
            Backend::Embedded => Self::Embedded {
                dir: TempDir::new(),
                records_read: Mutex::new(0),
                dead_read: Mutex::new(0),
                written: OnceLock::new(),
            },
        }
    }

    /// Records and dead letters are read when `relay`, running in this process on this queue,
    /// says it wrote them, rather than looked for every so often.
    pub fn written_by(&self, relay: &polyai_relay::queue::Backend) {
        if let (Self::Embedded { written, .. }, Some(queue)) = (self, &relay.embedded) {
            let _ = written.set(queue.written());
        }
    }

    /// Broker settings for the relay; `amqp_url` overrides the broker's address.
    pub fn settings(&self, event_types: EventTypes, amqp_url: Option<String>) -> BrokerSettings {
        match self {
            Self::Amqp(broker) => BrokerSettings {
                amqp_url: Some({
                    // Several comma-separated URLs, as AMQP_URL takes them.
                    let text = SecretString::from(amqp_url.unwrap_or_else(|| broker.url.clone()));
                    let addresses = polyai_relay::config::amqp::parse_addresses("AMQP_URL", &text).expect("valid URLs");
                    AmqpTarget { addresses, ..AmqpTarget::single(text) }
                }),
                data_dir: PathBuf::from("unused"),
                topology: broker.topology.clone(),
            },
            Self::Embedded { dir, .. } => BrokerSettings {
                amqp_url: None,
                data_dir: dir.0.clone(),
                topology: TestBroker::topology_for("embedded", event_types),
            },
        }
    }

    /// The RabbitMQ broker, for tests of RabbitMQ-only behaviour.
    pub fn broker(&self) -> &TestBroker {
        match self {
            Self::Amqp(broker) => broker,
            Self::Embedded { .. } => panic!("this test needs RabbitMQ"),
        }
    }

    pub async fn next_record(&self) -> Record {
        match self {
            Self::Amqp(broker) => {
                let delivery = broker.next_message(broker.conversations_queue()).await;
                Record {
                    json: serde_json::from_slice(&delivery.data).expect("record is JSON"),
                    raw: delivery.data.clone(),
                    delivery: Some(delivery),
                }
            }
            Self::Embedded { dir, records_read, written, .. } => {
                let line = next_line(&dir.0.join(CONVERSATIONS_FILE), records_read, written.get()).await;
                Record {
                    json: serde_json::from_str(&line).expect("record is JSON"),
                    raw: line.into_bytes(),
                    delivery: None,
                }
            }
        }
    }

    pub async fn next_dead_letter(&self) -> DeadLetter {
        match self {
            Self::Amqp(broker) => {
                let delivery = broker.next_message(&broker.topology.dead_queue).await;
                DeadLetter {
                    event_id: delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default(),
                    error: crate::helpers::header(&delivery, "x-relay-error"),
                    attempts: crate::helpers::header(&delivery, "x-relay-attempts"),
                    event: delivery.data,
                }
            }
            Self::Embedded { dir, dead_read, written, .. } => {
                #[derive(Deserialize)]
                struct Line {
                    event_id: String,
                    error: Option<String>,
                    attempts: u32,
                    event: Box<RawValue>,
                }
                let line = next_line(&dir.0.join(DEAD_FILE), dead_read, written.get()).await;
                let line: Line = serde_json::from_str(&line).expect("dead letter line");
                DeadLetter {
                    event_id: line.event_id,
                    error: line.error,
                    attempts: Some(line.attempts.to_string()),
                    event: line.event.get().as_bytes().to_vec(),
                }
            }
        }
    }

    /// Events waiting for the worker: ready ones on RabbitMQ (not those delivered and unacked),
    /// every one not yet acked on the embedded queue.
    pub async fn pending(&self) -> u64 {
        match self {
            Self::Amqp(broker) => u64::from(broker.ready_count(&broker.topology.enrich_queue).await),
            Self::Embedded { dir, .. } => EmbeddedQueue::count_in(&dir.0).expect("queue readable"),
        }
    }

    /// Dead letters written so far (not counting ones already read).
    pub async fn dead_count(&self) -> u64 {
        match self {
            Self::Amqp(broker) => u64::from(broker.ready_count(&broker.topology.dead_queue).await),
            Self::Embedded { dir, dead_read, .. } => {
                let text = std::fs::read_to_string(dir.0.join(DEAD_FILE)).unwrap_or_default();
                (text.lines().count() - *dead_read.lock().unwrap()) as u64
            }
        }
    }

    /// Where events that never came out may be, for a test's failure message: the worker's queue
    /// (ready, and how many consumers it has), the delay queues and the dead letters.
    pub async fn whereabouts(&self) -> String {
        match self {
            Self::Amqp(broker) => {
                let t = &broker.topology;
                let (ready, consumers) = broker.counts(&t.enrich_queue).await;
                let mut delayed = 0;
                for tier in RETRY_TIERS {
                    delayed += broker.ready_count(&t.retry_queue(tier)).await;
                }
                let dead = broker.ready_count(&t.dead_queue).await;
                let records = broker.ready_count(broker.conversations_queue()).await;
                format!(
                    "worker's queue: {ready} ready, {consumers} consumer(s); delay queues: {delayed}; \
                     dead letters: {dead}; records not yet read: {records}"
                )
            }
            Self::Embedded { .. } => {
                format!("worker's queue: {} not acked; dead letters: {}", self.pending().await, self.dead_count().await)
            }
        }
    }

    /// Event ids of the enriched records written so far.
    pub async fn enriched_ids(&self) -> HashSet<String> {
        match self {
            Self::Amqp(broker) => broker.drain_ids(broker.conversations_queue()).await,
            Self::Embedded { dir, .. } => std::fs::read_to_string(dir.0.join(CONVERSATIONS_FILE))
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter_map(|record| record["event_id"].as_str().map(str::to_owned))
                .collect(),
        }
    }

    /// Event ids of the events waiting for the worker.
    pub async fn pending_ids(&self) -> HashSet<String> {
        match self {
            Self::Amqp(broker) => broker.drain_ids(&broker.topology.enrich_queue).await,
            Self::Embedded { dir, .. } => {
                EmbeddedQueue::message_ids_in(&dir.0).expect("queue readable").into_iter().collect()
            }
        }
    }

    /// Everything a `run` process needs to use this queue, the fake API at `api_url` and the
    /// test secret, plus `extra`.
    pub fn relay_env(&self, api_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env();
        let common = [
            ("POLYAI_WEBHOOK_SECRET", crate::helpers::SECRET),
            ("POLYAI_API_KEY", crate::fake_polyai::API_KEY),
            ("POLYAI_BASE_URL", api_url),
            ("POLYAI_ACCOUNT_ID", crate::fake_polyai::ACCOUNT),
            ("POLYAI_PROJECT_ID", crate::fake_polyai::PROJECT),
        ];
        env.extend(common.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// The settings a relay process needs to use this queue, as environment variables.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Self::Amqp(broker) => {
                let t = &broker.topology;
                vec![
                    ("AMQP_URL".into(), broker.url.clone()),
                    ("RELAY_EVENTS_EXCHANGE".into(), t.events_exchange.clone()),
                    ("RELAY_ENRICH_QUEUE".into(), t.enrich_queue.clone()),
                    ("RELAY_CONVERSATIONS_EXCHANGE".into(), t.conversations_exchange.clone()),
                    ("RELAY_CONVERSATIONS_QUEUE".into(), broker.conversations_queue().to_owned()),
                    ("RELAY_DEAD_EXCHANGE".into(), t.dead_exchange.clone()),
                    ("RELAY_DEAD_QUEUE".into(), t.dead_queue.clone()),
                    ("RELAY_CONVERSATIONS_LOG".into(), t.conversations_log.clone().unwrap_or_default()),
                    ("RELAY_LOG_RETENTION".into(), format!("{}s", t.log_retention.as_secs())),
                ]
            }
            Self::Embedded { dir, .. } => vec![("RELAY_DATA_DIR".into(), dir.0.display().to_string())],
        }
    }

    /// Once the relay has stopped: nothing is left in the worker's queue, not even a delivery that
    /// was never acked. RabbitMQ counts unacked deliveries nowhere a client can read, but it puts
    /// them back in the queue when it drops their consumer (in the same step, on a quorum queue),
    /// so this waits for the consumers to be gone and then counts. The broker drops a closed
    /// connection's consumers on its own time and tells no one: its count is looked at until then.
    pub async fn assert_nothing_left(&self) {
        match self {
            Self::Amqp(_) => {
                let ready = self.wait_until_unconsumed().await;
                assert_eq!(ready, 0, "events left in the queue (acked never, or not at all)");
            }
            Self::Embedded { dir, .. } => {
                // Every row not yet acked, leased or not.
                assert_eq!(EmbeddedQueue::count_in(&dir.0).expect("queue readable"), 0, "events left in the queue");
            }
        }
    }

    /// Once the relay has stopped: waits until the broker has dropped its consumers of the
    /// worker's queue, and with them put back what they held unacked (see
    /// [`Self::assert_nothing_left`]); the events then ready. The embedded queue's are back as
    /// soon as its process is gone.
    pub async fn wait_until_unconsumed(&self) -> u64 {
        match self {
            Self::Amqp(broker) => u64::from(
                poll_until(MESSAGE_WAIT, || async {
                    match broker.counts(&broker.topology.enrich_queue).await {
                        (ready, 0) => Ok(ready),
                        (_, consumers) => Err(format!("the relay's {consumers} consumer(s) never went away")),
                    }
                })
                .await,
            ),
            Self::Embedded { .. } => self.pending().await,
        }
    }

    /// Waits until [`Self::pending`] equals `expected`, for counts that change where nothing tells
    /// the test: in a relay binary, or on the broker's own time (a delay queue's TTL hands a
    /// held event back). The count is looked at until then; panics after [`MESSAGE_WAIT`].
    pub async fn wait_for_pending(&self, expected: u64) {
        poll_until(MESSAGE_WAIT, || async {
            match self.pending().await {
                count if count == expected => Ok(()),
                count => Err(format!("{count} events pending, expected {expected}")),
            }
        })
        .await
    }
}

/// Waits for line number `*read` of a JSON Lines file and moves the cursor past it. A relay in
/// this process says when it has `written` to its files: the file is read then. A relay binary
/// says nothing to the test: the file is looked at until the line is there.
async fn next_line(path: &std::path::Path, read: &Mutex<usize>, written: Option<&watch::Receiver<u64>>) -> String {
    let take = || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut index = read.lock().unwrap();
        // Only complete lines: the writer may be mid-append.
        let line = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).nth(*index)?;
        *index += 1;
        Some(line.trim_end().to_owned())
    };
    let missing = || format!("no new line in {} within {MESSAGE_WAIT:?}", path.display());
    let Some(written) = written else {
        return poll_until(MESSAGE_WAIT, || async { take().ok_or_else(missing) }).await;
    };
    let mut written = written.clone();
    let arrived = async {
        loop {
            // Marked seen before the read, so a write during it wakes the wait below.
            written.borrow_and_update();
            if let Some(line) = take() {
                return line;
            }
            if written.changed().await.is_err() {
                panic!("the relay stopped: {}", missing());
            }
        }
    };
    tokio::time::timeout(MESSAGE_WAIT, arrived).await.unwrap_or_else(|_| panic!("{}", missing()))
}
