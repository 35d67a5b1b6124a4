//! The spool (design §11): where the receiver commits an event, fsync'd, when RabbitMQ is away,
//! blocked or slow to confirm, so the webhook is still answered 204; and the drainer that
//! forwards what it holds to the broker once it is back.
//!
//! It is the embedded queue's SQLite store (WAL, `synchronous=FULL`) in `RELAY_SPOOL_DIR`, used
//! as a plain FIFO: one process owns the directory, events leave it only after the broker
//! confirmed them. It knows nothing of HTTP; the receiver decides when to spool.

mod drain;

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use anyhow::Context;
use tokio::sync::watch;

pub use self::drain::Drainer;

use crate::{
    config::SpoolSettings,
    owner_only,
    queue::{
        embedded::{
            failed_write::{tell_when_over, FailedWrite},
            store::{stored_size, Store, Stored},
        },
        Message,
    },
    telemetry::{names, Metrics},
};

/// The files SQLite keeps for the store, made owner-only at open (SQLite gives the `-wal` and
/// `-shm` files it creates the database file's permissions).
const STORE_FILES: [&str; 3] = ["queue.sqlite3", "queue.sqlite3-wal", "queue.sqlite3-shm"];

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full (RELAY_SPOOL_MAX is {max} bytes)")]
    Full { max: u64 },
    #[error("the spool cannot be written: {0}")]
    Storage(String),
}

/// What the spool holds and whether it takes more, as those who wait on it see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Events waiting to be forwarded: the drainer wakes when there are some.
    pub events: u64,
    /// Whether a webhook could be spooled now ([`Spool::accepts`]): `/readyz` follows it.
    pub accepts: bool,
}

struct Inner {
    /// Held for the life of the spool: two drainers on one directory would each send every event.
    _lock: File,
    store: Store,
    /// Bytes of the events (as [`stored_size`] counts them), kept here so the receiver can check
    /// the cap without a query; read from the store at open.
    bytes: AtomicU64,
    max_bytes: u64,
    /// When a write last failed, unless one worked since: drives `/readyz`, see
    /// [`failed_write`](crate::queue::embedded::failed_write).
    failed_write: FailedWrite,
    /// True once an event found no room, until the drainer frees some (drives `/readyz`).
    full: AtomicBool,
    /// The event count (read from the store at open) and whether the spool accepts, sent on every
    /// change: the drainer, `/readyz` and tests wait on it instead of looking now and then.
    level: watch::Sender<Level>,
    /// Held across a write or a removal and the change it makes to the count: the drainer can
    /// read an event the moment its write commits, and its removal must not be counted before
    /// the write is, or the count would go below zero.
    counting: Mutex<()>,
    dir: PathBuf,
    /// This relay's recorder (its own in tests, the process's in production).
    metrics: Metrics,
}

/// The spool. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl Spool {
    /// Opens the spool in `settings.dir`, creating it owner-only; what a previous process left
    /// there is drained like anything new.
    pub fn open(settings: &SpoolSettings, metrics: Metrics) -> anyhow::Result<Self> {
        let dir = &settings.dir;
        owner_only::create_dir(dir)
            .with_context(|| format!("RELAY_SPOOL_DIR: cannot create {} owner-only", dir.display()))?;
        let lock = owner_only::open_file(&dir.join("lock"))
            .with_context(|| format!("RELAY_SPOOL_DIR: cannot write in {}", dir.display()))?;
        if lock.try_lock().is_err() {
            anyhow::bail!(
                "RELAY_SPOOL_DIR: the spool in {} is in use by another process; give each receiver a directory of its own",
                dir.display()
            );
        }
        // Created owner-only before SQLite opens it, so the data never sits in a wider file.
        owner_only::open_file(&dir.join(STORE_FILES[0]))
            .with_context(|| format!("RELAY_SPOOL_DIR: cannot create the spool in {}", dir.display()))?;
        for name in &STORE_FILES[1..] {
            owner_only::restrict_if_present(&dir.join(name))
                .with_context(|| format!("RELAY_SPOOL_DIR: cannot make {name} owner-only"))?;
        }
        let store =
            Store::open(dir).with_context(|| format!("RELAY_SPOOL_DIR: cannot open the spool in {}", dir.display()))?;
        crate::queue::embedded::store::sync_dir(dir);
        let events = store.len().context("RELAY_SPOOL_DIR: cannot read the spool")?;
        let bytes = store.stored_bytes().context("RELAY_SPOOL_DIR: cannot read the spool")?;
        metrics.record(|| {
            metrics::gauge!(names::SPOOL_MAX_BYTES).set(settings.max_bytes as f64);
            // At 0 from the start, so that the alert on their increase fires on the first failure.
            for step in ["read", "remove"] {
                metrics::counter!(names::SPOOL_FAILURES, "step" => step).increment(0);
            }
            // And these, so that what was spooled less what drained reads right from the first
            // webhook spooled (a rate of either, too, sees its first increase).
            metrics::counter!(names::SPOOLED).increment(0);
            metrics::counter!(names::SPOOL_DRAINED).increment(0);
        });
        let spool = Self {
            inner: Arc::new(Inner {
                _lock: lock,
                store,
                bytes: AtomicU64::new(bytes),
                max_bytes: settings.max_bytes,
                failed_write: FailedWrite::default(),
                full: AtomicBool::new(false),
                level: watch::Sender::new(Level { events, accepts: true }),
                counting: Mutex::new(()),
                dir: dir.clone(),
                metrics,
            }),
        };
        spool.inner.update(|_| {});
        if events > 0 {
            tracing::info!(events, bytes, dir = %dir.display(), "the spool holds events from before the restart; they are forwarded once the broker confirms");
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Commits `message` to disk (fsync'd) unless that would take the spool past its cap.
    pub async fn put(&self, message: Message) -> Result<(), SpoolError> {
        let size = stored_size(&message);
        let inner = &self.inner;
        // Reserved before the write, so concurrent webhooks cannot overshoot the cap together.
        let before = inner.bytes.fetch_add(size, Ordering::SeqCst);
        if before + size > inner.max_bytes {
            inner.bytes.fetch_sub(size, Ordering::SeqCst);
            inner.full.store(true, Ordering::SeqCst);
            inner.update(|_| {});
            return Err(SpoolError::Full { max: inner.max_bytes });
        }
        let shared = self.inner.clone();
        // The bookkeeping happens on the blocking thread with the write: a caller that stops
        // waiting (the ack deadline) cannot leave a committed event uncounted.
        let written = tokio::task::spawn_blocking(move || {
            let _counting = shared.counting();
            // `available_at` 0: every spooled event is due at once, so the store's order is insertion order.
            let result = shared.store.insert(&message, 0);
            shared.failed_write.note(result.is_ok());
            match &result {
                Ok(()) => {
                    shared.metrics.record(|| metrics::counter!(names::SPOOLED).increment(1));
                    shared.update(|events| *events += 1);
                }
                Err(_) => {
                    shared.bytes.fetch_sub(size, Ordering::SeqCst);
                    shared.update(|_| {});
                }
            }
            result
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                // Those who wait on the level hear when the spool may be tried again.
                tell_when_over(Arc::downgrade(&self.inner), |inner| inner.update(|_| {}));
                Err(SpoolError::Storage(error.to_string()))
            }
            Err(join) => Err(SpoolError::Storage(join.to_string())),
        }
    }

    /// Whether a webhook could be spooled now: no write failed in the last
    /// [`UNREADY_AFTER_FAILED_WRITE`](crate::queue::embedded::failed_write::UNREADY_AFTER_FAILED_WRITE)
    /// (or one worked since), and the last event found room.
    pub fn accepts(&self) -> bool {
        self.inner.accepts()
    }

    /// Events waiting to be forwarded.
    pub fn events(&self) -> u64 {
        self.inner.level.borrow().events
    }

    /// [`Level`] as it changes, for waiting on it.
    pub fn level(&self) -> watch::Receiver<Level> {
        self.inner.level.subscribe()
    }

    /// The oldest events after `after_seq` (0: from the start), oldest first: at most `limit`, and
    /// no more once they hold `max_bytes`.
    async fn oldest(&self, after_seq: i64, limit: usize, max_bytes: u64) -> Result<Vec<Stored>, SpoolError> {
        let shared = self.inner.clone();
        match tokio::task::spawn_blocking(move || shared.store.oldest(after_seq, limit, max_bytes)).await {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(error)) => Err(SpoolError::Storage(error.to_string())),
            Err(join) => Err(SpoolError::Storage(join.to_string())),
        }
    }

    /// Removes events the broker confirmed, in one transaction.
    async fn remove(&self, confirmed: &[(i64, u64)]) -> Result<(), SpoolError> {
        if confirmed.is_empty() {
            return Ok(());
        }
        let (shared, confirmed) = (self.inner.clone(), confirmed.to_vec());
        let removed = tokio::task::spawn_blocking(move || {
            let seqs: Vec<i64> = confirmed.iter().map(|(seq, _)| *seq).collect();
            let _counting = shared.counting();
            shared.store.remove_all(&seqs)?;
            let bytes: u64 = confirmed.iter().map(|(_, size)| size).sum();
            shared.bytes.fetch_sub(bytes, Ordering::SeqCst);
            shared.full.store(false, Ordering::SeqCst);
            let drained = confirmed.len() as u64;
            shared.metrics.record(|| metrics::counter!(names::SPOOL_DRAINED).increment(drained));
            shared.update(|events| *events -= drained);
            Ok::<_, rusqlite::Error>(())
        })
        .await;
        match removed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(SpoolError::Storage(error.to_string())),
            Err(join) => Err(SpoolError::Storage(join.to_string())),
        }
    }
}

impl Spool {
    /// A failure of the spool's storage while draining, by `step` (`read`, `remove`).
    fn count_failure(&self, step: &'static str) {
        self.inner.metrics.record(|| metrics::counter!(names::SPOOL_FAILURES, "step" => step).increment(1));
    }
}

impl Inner {
    fn counting(&self) -> MutexGuard<'_, ()> {
        self.counting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accepts(&self) -> bool {
        self.failed_write.allows()
            && !self.full.load(Ordering::SeqCst)
            && self.bytes.load(Ordering::SeqCst) < self.max_bytes
    }

    /// Applies `change` to the event count after a write, a refusal or a removal, and tells the
    /// watchers of [`Level`] and the gauges what the spool holds now.
    fn update(&self, change: impl FnOnce(&mut u64)) {
        let accepts = self.accepts();
        self.level.send_if_modified(|level| {
            let before = *level;
            change(&mut level.events);
            level.accepts = accepts;
            *level != before
        });
        let (events, bytes) = (self.level.borrow().events as f64, self.bytes.load(Ordering::SeqCst) as f64);
        self.metrics.record(|| {
            metrics::gauge!(names::SPOOL_EVENTS).set(events);
            metrics::gauge!(names::SPOOL_BYTES).set(bytes);
        });
    }
}

#[cfg(test)]
mod tests;
