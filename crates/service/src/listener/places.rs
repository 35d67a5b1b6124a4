//! The cap on open connections, held by eviction rather than by waiting: at the cap, a new
//! connection takes the place of the oldest one that is not handling a verified request. A
//! client without the secret can then only churn places among its own connections; PolyAI's
//! deliveries always get one (design §10).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::watchdog::Activity;
use crate::{log_limit::LogLimit, telemetry::names, telemetry::Metrics};

/// One listener's places, `max` of them.
pub struct Places {
    /// The listener's name, for the metric and the log (`webhooks`, `admin`).
    listener: &'static str,
    /// `RELAY_MAX_CONNECTIONS`, for the log.
    max: usize,
    /// Free places; each open connection's [`Place`] holds one until it closes.
    free: Arc<Semaphore>,
    /// Open connections in the order they were accepted (oldest first): who is evicted next.
    open: Mutex<Open>,
    /// Wakes [`Places::admit`], waiting because every connection was busy, when one is not any more.
    not_busy: Arc<Notify>,
    /// This relay's recorder, for the evictions metric.
    metrics: Metrics,
    /// Evictions are logged once per interval: a flood evicts thousands a second, which the
    /// metric counts.
    log: LogLimit,
}

/// The accepted connections, by accept order.
#[derive(Default)]
struct Open {
    /// What each open connection is doing, by its number.
    connections: BTreeMap<u64, Arc<Activity>>,
    /// The number of the next connection accepted.
    next: u64,
}

/// One open connection's place; dropping it (the connection closed) frees the place.
pub struct Place {
    /// The connection's key in [`Open::connections`].
    number: u64,
    /// What the connection is doing, shared with its watchdog and the evicting accept loop.
    activity: Arc<Activity>,
    /// Where to give the place back.
    places: Arc<Places>,
    /// Counted against `max` until the connection closes.
    _free: OwnedSemaphorePermit,
}

impl Place {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.places.open().connections.remove(&self.number);
    }
}

impl Places {
    pub fn new(listener: &'static str, max: usize, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            listener,
            max,
            free: Arc::new(Semaphore::new(max)),
            open: Mutex::new(Open::default()),
            not_busy: Arc::new(Notify::new()),
            metrics,
            log: LogLimit::default(),
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a connection just accepted: a free one, else the place of the oldest
    /// connection not busy with a verified request, which is closed (then `true`: another
    /// connection was evicted for this one). Waits only while every open connection is handling
    /// a verified request.
    pub async fn admit(self: &Arc<Self>) -> (Place, bool) {
        loop {
            if let Ok(free) = self.free.clone().try_acquire_owned() {
                return (self.enter(free), false);
            }
            // Before looking: a connection that stops being busy after the look still wakes us.
            let not_busy = self.not_busy.notified();
            tokio::pin!(not_busy);
            not_busy.as_mut().enable();
            let evicted = self.evict_one();
            tokio::select! {
                // The evicted connection frees its place as soon as its task sees the cut.
                free = self.free.clone().acquire_owned() => {
                    return (self.enter(free.expect("the semaphore is never closed")), evicted);
                }
                _ = not_busy, if !evicted => {}
            }
        }
    }

    fn enter(self: &Arc<Self>, free: OwnedSemaphorePermit) -> Place {
        let activity = Activity::accepted(self.not_busy.clone());
        let mut open = self.open();
        let number = open.next;
        open.next += 1;
        open.connections.insert(number, activity.clone());
        Place { number, activity, places: self.clone(), _free: free }
    }

    /// Cuts the oldest connection that is not busy, preferring those that never carried a
    /// verified request (PolyAI's keep-alive connections go last); whether one was cut.
    fn evict_one(&self) -> bool {
        let phase = {
            let open = self.open();
            let connections = || open.connections.values();
            let untrusted = connections().filter(|activity| !activity.vouched());
            let trusted = connections().filter(|activity| activity.vouched());
            // `cut` re-checks the phase atomically: one that became busy a moment ago is skipped.
            untrusted.chain(trusted).find_map(|activity| activity.cut())
        };
        let Some(phase) = phase else { return false };
        let (listener, phase) = (self.listener, phase.label());
        self.metrics.record(|| {
            metrics::counter!(names::CONNECTIONS_EVICTED, "listener" => listener, "phase" => phase).increment(1)
        });
        if let Some(unsaid) = self.log.admit(listener) {
            // `unsaid`: evictions since the last such line, which the metric counts.
            tracing::warn!(
                listener,
                phase,
                max_connections = self.max,
                unsaid,
                "at the connection cap: closed the oldest connection with no verified request in flight"
            );
        }
        true
    }
}
