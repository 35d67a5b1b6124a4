//! The embedded queue: the whole pipeline in one process with no broker (design §6).
//!
//! Raw events and retries live in SQLite (`queue.sqlite3` in `RELAY_DATA_DIR`); enriched records
//! are appended to `conversations.jsonl` and dead letters to `dead.jsonl`. Every write is
//! fsync'd before it is reported done, so a crash loses nothing that was answered 204.
//! For one small deployment and for trying the relay; RabbitMQ is the production path.

mod dead;
pub(crate) mod failed_write;
mod jsonl;
mod known;
mod leases;
mod line_file;
pub(crate) mod store;

use std::{
    borrow::Cow,
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{watch, Notify};

pub use self::dead::DeadLine;
use self::{
    failed_write::{tell_when_over, FailedWrite},
    jsonl::JsonLines,
    leases::Leases,
    store::Store,
};
use super::{
    headers, ledger, Acker, ConsumeError, Consumer, Delivery, Destination, Holding, Message, PublishError, Publisher,
    Source,
};

/// The files the embedded queue writes, relative to `RELAY_DATA_DIR`.
pub const CONVERSATIONS_FILE: &str = "conversations.jsonl";
pub const DEAD_FILE: &str = "dead.jsonl";

/// How long the ledger remembers a conversation unless told otherwise (`RELAY_LOG_RETENTION`'s default).
const DEFAULT_LEDGER_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Ledger writes between two prunings of it.
const LEDGER_PRUNE_EVERY: u64 = 1000;

/// Longest a consumer waits for a retry's due time before looking again: due times are read
/// from the system clock and slept on tokio's, which part ways when the system clock is set.
const DUE_CHECK: Duration = Duration::from_secs(1);

struct Shared {
    /// Held for the life of the queue: a second process on the same directory would reset this
    /// one's leases and deliver its messages twice, so it is refused instead.
    _lock: std::fs::File,
    store: Store,
    conversations: JsonLines,
    dead: JsonLines,
    /// Counts the writes to `conversations.jsonl` and `dead.jsonl` (see [`EmbeddedQueue::written`]).
    written: watch::Sender<u64>,
    /// Wakes consumers when a message is inserted or released.
    arrived: Notify,
    /// False after a failed write, true again after a successful one or a while
    /// ([`failed_write`]); drives `/readyz`, and the worker takes no event while it is false.
    healthy: watch::Sender<bool>,
    failed_write: FailedWrite,
    delivery_limit: u32,
    /// When retries fall due.
    clock: Clock,
    dir: PathBuf,
    /// How long the ledger remembers a conversation (`RELAY_LOG_RETENTION`), in milliseconds.
    ledger_retention_ms: AtomicI64,
    /// Ledger writes so far: every [`LEDGER_PRUNE_EVERY`]th also forgets what is past retention,
    /// so the table stays bounded whether or not anything reconciles.
    ledger_writes: AtomicU64,
}

impl Shared {
    /// Tells `/readyz` and the worker whether writes may be taken now.
    fn tell_health(&self) {
        let allows = self.failed_write.allows();
        self.healthy.send_if_modified(|healthy| std::mem::replace(healthy, allows) != allows);
    }

    /// Stores a new event and, in the same transaction, records in the ledger that the relay knows
    /// its conversation (reconciliation reads it).
    fn insert_event(&self, message: &Message, due: i64, conversation_id: Option<String>) -> std::io::Result<()> {
        let Some(id) = conversation_id else { return self.store.insert(message, due).map_err(io_error) };
        self.store.insert_known(message, due, &id, self.clock.now_ms()).map_err(io_error)?;
        self.prune_ledger_now_and_then();
        Ok(())
    }

    /// Records in the ledger that the relay knows this conversation (reconciliation reads it).
    fn note_known(&self, conversation_id: Option<String>) -> std::io::Result<()> {
        let Some(id) = conversation_id else { return Ok(()) };
        self.store.note_known(&id, self.clock.now_ms()).map_err(io_error)?;
        self.prune_ledger_now_and_then();
        Ok(())
    }

    /// Every [`LEDGER_PRUNE_EVERY`] ledger writes, forgets what is older than its retention.
    ///
    /// It runs after a write has committed, so it never fails that write: an event stored but
    /// answered as failed would be sent again by PolyAI and stored twice. A prune that fails
    /// leaves the table a little larger until the next one.
    fn prune_ledger_now_and_then(&self) {
        if self.ledger_writes.fetch_add(1, Ordering::Relaxed) % LEDGER_PRUNE_EVERY == LEDGER_PRUNE_EVERY - 1 {
            let horizon = self.clock.now_ms() - self.ledger_retention_ms.load(Ordering::Relaxed);
            if let Err(error) = self.store.forget_known_before(horizon) {
                tracing::warn!(%error, "the ledger could not forget what is past its retention; trying again later");
            }
        }
    }
}

/// Why the embedded queue cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process owns the directory (a running relay, most likely).
    #[error("RELAY_DATA_DIR: the embedded queue in {} is in use by another process; one process owns it (set AMQP_URL to run several)", dir.display())]
    InUse { dir: PathBuf },
    #[error("RELAY_DATA_DIR: {}: {what}", dir.display())]
    Unusable { dir: PathBuf, what: String },
}

/// [`Publisher`] and [`Source`] on local storage. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedQueue {
    shared: Arc<Shared>,
}

/// How the queue reads the time retries fall due by: the system clock in production; tokio's
/// clock in tests, so a retry falls due when paused time is advanced past its delay.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// Unix milliseconds at `start`, advancing with tokio's clock.
    Tokio {
        start: tokio::time::Instant,
        start_ms: i64,
    },
}

impl Clock {
    pub fn tokio() -> Self {
        Self::Tokio { start: tokio::time::Instant::now(), start_ms: system_ms() }
    }

    /// Unix milliseconds now.
    fn now_ms(&self) -> i64 {
        match self {
            Self::System => system_ms(),
            Self::Tokio { start, start_ms } => start_ms + start.elapsed().as_millis() as i64,
        }
    }
}

fn system_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl EmbeddedQueue {
    /// Opens the queue in `dir`, creating the directory and files as needed.
    pub fn open(dir: &Path, delivery_limit: u32) -> Result<Self, OpenError> {
        Self::open_with_clock(dir, delivery_limit, Clock::System)
    }

    /// [`Self::open`], reading time from `clock`.
    pub fn open_with_clock(dir: &Path, delivery_limit: u32, clock: Clock) -> Result<Self, OpenError> {
        let unusable = |action: &str, detail: String| OpenError::Unusable {
            dir: dir.to_owned(),
            what: format!("cannot {action}: {detail}"),
        };
        crate::owner_only::create_dir(dir).map_err(|e| unusable("create it owner-only", e.to_string()))?;
        let lock =
            crate::owner_only::open_file(&dir.join("lock")).map_err(|e| unusable("write in it", e.to_string()))?;
        if lock.try_lock().is_err() {
            return Err(OpenError::InUse { dir: dir.to_owned() });
        }
        store::prepare(dir).map_err(|e| unusable("create the queue", e.to_string()))?;
        let store = Store::open(dir).map_err(|e| unusable("open the queue", e.to_string()))?;
        let written = watch::Sender::new(0);
        let open = |name: &str| {
            JsonLines::open(&dir.join(name), written.clone())
                .map_err(|e| unusable(&format!("open {name}"), e.to_string()))
        };
        let (conversations, dead) = (open(CONVERSATIONS_FILE)?, open(DEAD_FILE)?);
        store::sync_dir(dir);
        Ok(Self {
            shared: Arc::new(Shared {
                _lock: lock,
                store,
                conversations,
                dead,
                written,
                arrived: Notify::new(),
                healthy: watch::Sender::new(true),
                failed_write: FailedWrite::default(),
                delivery_limit: delivery_limit.max(1),
                clock,
                dir: dir.to_owned(),
                ledger_retention_ms: AtomicI64::new(DEFAULT_LEDGER_RETENTION.as_millis() as i64),
                ledger_writes: AtomicU64::new(0),
            }),
        })
    }

    /// Changes each time a record or a dead letter is on disk in `conversations.jsonl` or
    /// `dead.jsonl`, or the dead letters were rewritten: a reader in this process (the demo's
    /// printer) waits on it, then reads the files.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.shared.written.subscribe()
    }

    /// Messages waiting for the worker (including retries not yet due and leased ones).
    pub async fn pending(&self) -> anyhow::Result<u64> {
        let shared = self.shared.clone();
        Ok(tokio::task::spawn_blocking(move || shared.store.len()).await??)
    }

    /// Counts the messages in the queue in `dir` without taking it over (the queue may belong
    /// to a running relay).
    pub fn count_in(dir: &Path) -> anyhow::Result<u64> {
        Ok(Store::open_to_inspect(dir)?.len()?)
    }

    /// Event ids of the messages in the queue in `dir`, oldest first, without taking it over.
    pub fn message_ids_in(dir: &Path) -> anyhow::Result<Vec<String>> {
        Ok(Store::open_to_inspect(dir)?.message_ids()?)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, PublishError> {
        let shared = self.shared.clone();
        let result = tokio::task::spawn_blocking(move || work(&shared)).await;
        let result = match result {
            Ok(result) => result.map_err(|e| PublishError::Failed(e.to_string())),
            Err(join) => Err(PublishError::Failed(join.to_string())),
        };
        self.shared.failed_write.note(result.is_ok());
        self.shared.tell_health();
        if result.is_err() {
            tell_when_over(Arc::downgrade(&self.shared), Shared::tell_health);
        }
        result
    }
}

fn io_error(error: rusqlite::Error) -> std::io::Error {
    std::io::Error::other(error)
}

/// One line of `dead.jsonl`: the event untouched, with why it failed.
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    event_id: &'a str,
    event_type: &'a str,
    error: Option<&'a str>,
    attempts: u32,
    dead_at: String,
    headers: &'a BTreeMap<String, String>,
    /// The webhook body, byte for byte: a `RawValue` is written as it is, where a `Value` would
    /// sort its keys and rewrite its numbers, and a replay would no longer send what PolyAI sent.
    event: Option<&'a RawValue>,
    /// The body as text when it cannot be `event` as it is: not JSON, or with a newline or
    /// spaces around it that would break the line or be lost.
    event_text: Option<Cow<'a, str>>,
}

/// A dead letter as one JSON line.
fn dead_letter_line(message: &Message) -> Vec<u8> {
    let event = serde_json::from_slice::<&RawValue>(&message.body)
        .ok()
        .filter(|event| event.get().len() == message.body.len() && !event.get().contains('\n'));
    let line = DeadLetterLine {
        event_id: &message.message_id,
        event_type: &message.event_type,
        error: message.header(headers::ERROR),
        attempts: message.attempts(),
        // When it died: the worker's own record of it, else now (the crash-loop backstop).
        dead_at: message.header(headers::DEAD_AT).map(str::to_owned).unwrap_or_else(|| {
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
        }),
        headers: &message.headers,
        event,
        event_text: event.is_none().then(|| String::from_utf8_lossy(&message.body)),
    };
    serde_json::to_vec(&line).unwrap_or_default()
}

#[async_trait]
impl Publisher for EmbeddedQueue {
    async fn publish(&self, to: Destination, message: Message) -> Result<(), PublishError> {
        match to {
            Destination::Events | Destination::Retry { .. } => {
                let delay = match to {
                    Destination::Retry { delay } => delay.min(super::RETRY_TIERS[super::RETRY_TIERS.len() - 1]),
                    _ => Duration::ZERO,
                };
                let due = self.shared.clock.now_ms() + delay.as_millis() as i64;
                // A new event (not a retry) of a finished call makes its conversation known to
                // reconciliation.
                let known = matches!(to, Destination::Events)
                    .then(|| ledger::known_conversation(&message.event_type, &message.body))
                    .flatten();
                self.blocking(move |shared| shared.insert_event(&message, due, known)).await?;
                self.shared.arrived.notify_waiters();
                Ok(())
            }
            Destination::Conversations => {
                let known = ledger::known_conversation(&message.event_type, &message.body);
                // Known before the record is written: a crash between the two leaves the event
                // unacked, so its record is written on its next delivery, and reconciliation
                // never sends the call again meanwhile.
                self.blocking(move |shared| {
                    shared.note_known(known)?;
                    shared.conversations.append(&message.body)
                })
                .await
            }
            Destination::Dead => self.blocking(move |shared| shared.dead.append(&dead_letter_line(&message))).await,
            // The store takes an event and its ledger entry in one transaction: one it refused
            // left nothing to withdraw (and `keeps_refused_copies` says so).
            Destination::Withdrawn => Ok(()),
        }
    }

    fn is_ready(&self) -> bool {
        *self.shared.healthy.borrow()
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.shared.healthy.subscribe()
    }
}

#[async_trait]
impl Source for EmbeddedQueue {
    async fn open(&self, _prefetch: u16) -> Result<Box<dyn Consumer>, ConsumeError> {
        Ok(Box::new(EmbeddedConsumer::new(self.clone())))
    }

    async fn get(&self) -> Result<Option<Delivery>, ConsumeError> {
        let mut consumer = EmbeddedConsumer::new(self.clone());
        match consumer.take_due().await {
            // The consumer goes with the delivery: dropped unsettled, it gives the message back.
            Look::Due(delivery) => {
                Ok(Some(Delivery { acker: Box::new(Holding { acker: delivery.acker, _owner: consumer }), ..delivery }))
            }
            Look::NothingDue(_) => Ok(None),
            Look::Unreadable => Err(ConsumeError::Unavailable("the embedded queue cannot be read".into())),
        }
    }
}

/// Hands out due messages; the ones still unsettled when it is dropped go back to the queue,
/// as a closed AMQP channel would return them.
struct EmbeddedConsumer {
    queue: EmbeddedQueue,
    leases: Arc<Leases>,
    /// A look at the store still running, kept here while awaited: a caller that stops waiting
    /// for [`Consumer::next`] and calls it again gets the message that look leased, not one
    /// taken and handed to no one. (The worker drops the consumer instead, and then the
    /// [`Leases`] give it back.)
    look: Option<tokio::task::JoinHandle<LookResult>>,
}

/// What a look at the store found: a message leased, else when the next one falls due.
type LookResult = Result<(Option<store::Leased>, Option<i64>), rusqlite::Error>;

/// What one look at the queue found.
enum Look {
    Due(Delivery),
    /// Nothing due; when the next message falls due, if any.
    NothingDue(Option<i64>),
    Unreadable,
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let shared = self.queue.shared.clone();
        loop {
            // Registered before looking, so an insert between the look and the wait still wakes us.
            let arrived = shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();

            let next_due = match self.take_due().await {
                Look::Due(delivery) => return Some(delivery),
                Look::Unreadable => return None,
                Look::NothingDue(next_due) => next_due,
            };
            // A message that falls due later is looked for then (or after DUE_CHECK). With none,
            // only an insert or a release can bring one, and each wakes `arrived`: no look until then.
            let due_check = async {
                match next_due {
                    Some(due) => {
                        let wait = Duration::from_millis((due - shared.clock.now_ms()).max(0) as u64);
                        tokio::time::sleep(wait.min(DUE_CHECK)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut arrived => {}
                _ = due_check => {}
            }
        }
    }
}

impl EmbeddedConsumer {
    fn new(queue: EmbeddedQueue) -> Self {
        Self { queue, leases: Arc::default(), look: None }
    }

    /// Leases the oldest due message, dead-lettering on the way those past the delivery limit.
    async fn take_due(&mut self) -> Look {
        let shared = self.queue.shared.clone();
        loop {
            let earlier = self.look.is_some();
            let look = match self.look.take() {
                Some(running) => running,
                None => {
                    let (store, leases) = (shared.clone(), self.leases.clone());
                    tokio::task::spawn_blocking(move || {
                        let leased = store.store.lease_next(store.clock.now_ms())?;
                        // Held from the moment it is taken: a consumer dropped while this ran
                        // gives back only what it knows of, so then the look gives it back.
                        if let Some(lease) = &leased {
                            if !leases.hold(lease.seq) {
                                store.store.release(lease.seq)?;
                                store.arrived.notify_waiters();
                                return Ok((None, None));
                            }
                        }
                        let next_due = if leased.is_none() { store.store.next_due()? } else { None };
                        Ok((leased, next_due))
                    })
                }
            };
            let look = self.look.insert(look).await;
            self.look = None;
            // An earlier call's look that found nothing looked before this call listened for
            // arrivals (`next`): a message inserted since would wake no one. Looked at again.
            if earlier && matches!(look, Ok(Ok((None, _)))) {
                continue;
            }
            let (leased, next_due) = match look {
                Ok(Ok(found)) => found,
                Ok(Err(error)) => {
                    tracing::error!(%error, "embedded queue cannot be read");
                    return Look::Unreadable;
                }
                Err(_) => return Look::Unreadable,
            };
            let Some(leased) = leased else { return Look::NothingDue(next_due) };
            if leased.deliveries > shared.delivery_limit {
                self.give_up(leased).await;
                continue;
            }
            return Look::Due(Delivery {
                message: leased.message,
                redelivered: leased.deliveries > 1,
                acker: Box::new(EmbeddedAcker {
                    queue: self.queue.clone(),
                    seq: leased.seq,
                    leases: self.leases.clone(),
                }),
            });
        }
    }

    /// The crash-loop backstop: a message delivered more than the limit goes to `dead.jsonl`.
    async fn give_up(&self, leased: store::Leased) {
        let mut message = leased.message;
        // Like the worker's dead letters: the trace as a reference, so a replay starts afresh.
        crate::telemetry::trace_context::for_dead_letter(&tracing::Span::none(), &mut message.headers);
        message.headers.insert(
            headers::ERROR.to_owned(),
            format!("delivered {} times without being settled", leased.deliveries - 1),
        );
        let seq = leased.seq;
        let result = self
            .queue
            .blocking(move |shared| {
                shared.dead.append(&dead_letter_line(&message))?;
                shared.store.remove(seq).map_err(io_error)
            })
            .await;
        match result {
            Ok(()) => self.leases.settled(seq),
            // Still held: given back when the consumer goes, and dead-lettered on a later look.
            Err(error) => tracing::error!(%error, "could not dead-letter a message past its delivery limit"),
        }
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        let seqs = self.leases.close();
        if seqs.is_empty() {
            return;
        }
        let shared = self.queue.shared.clone();
        let release = move || {
            for seq in seqs {
                let _ = shared.store.release(seq);
            }
            shared.arrived.notify_waiters();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

struct EmbeddedAcker {
    queue: EmbeddedQueue,
    seq: i64,
    leases: Arc<Leases>,
}

impl EmbeddedAcker {
    fn settled(&self) {
        self.leases.settled(self.seq);
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<(), ConsumeError> {
        let seq = self.seq;
        self.queue
            .blocking(move |shared| shared.store.remove(seq).map_err(io_error))
            .await
            .map_err(|e| ConsumeError::Unavailable(e.to_string()))?;
        self.settled();
        Ok(())
    }

    async fn requeue(&self) -> Result<(), ConsumeError> {
        let seq = self.seq;
        self.queue
            .blocking(move |shared| shared.store.release(seq).map_err(io_error))
            .await
            .map_err(|e| ConsumeError::Unavailable(e.to_string()))?;
        self.settled();
        self.queue.shared.arrived.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
