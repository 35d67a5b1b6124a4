//! Deliveries enqueued within the timestamp tolerance, so that a replay of one (a copy of a
//! signed request, under any event id) is answered `204 duplicate` instead of being enqueued
//! again (design §10). Memory is bounded: entries expire after the window, and past
//! [`CAPACITY`] the oldest are forgotten first, so a flood of distinct signed deliveries cannot
//! grow it; a replay of a forgotten one is enqueued again, as it was before this existed.
//!
//! A delivery is reserved when first seen, in the same lock hold as the look-up: copies sent at
//! once on many connections cannot all find it absent and all be enqueued. While the first is
//! being stored its copies are told [`Seen::InFlight`] (answered 503, not 204): its store may
//! still fail, and a copy answered 2xx then would be lost. A reservation is kept once the
//! delivery is stored and dropped otherwise (or if its request is dropped), so a retry of a
//! delivery that got 503 is taken.
//!
//! Why 503 rather than holding the copy until the first's outcome is known: a held copy keeps its
//! publishing permit for up to `RELAY_ACK_DEADLINE` (a replayer's copies would take the permits
//! PolyAI's webhooks need) and each pending delivery would need a channel allocated for it.
//! PolyAI retries a delivery after the first attempt's answer, or its 5 s timeout, which is past
//! the relay's deadline: its own retries find the first attempt's outcome known. The pending set is a fixed allocation beside the table, and a
//! stored webhook takes the lock twice, as before: to reserve, and to record the outcome.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::Duration,
};

use axum::http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::signature::{MatchedScheme, VerifiedEvent};

/// Entries at most: 64 Ki × 20 bytes in each of the map and the queue, about 4 MB when full.
const CAPACITY: usize = 1 << 16;

/// What makes two deliveries the same: for the timestamped scheme, the signature and the
/// timestamp it covers; for the body scheme, the body's digest (its signature adds nothing).
///
/// The first 128 bits of a SHA-256: two different deliveries share them with a chance of about
/// 2^-97 among a full table, and a sender would need a second preimage of SHA-256 to make one on
/// purpose. Half the digest halves the table (the peak RSS of a busy receiver, BENCHMARKS.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey([u8; 16]);

impl DeliveryKey {
    /// `project`: the same body sent to two projects' paths is two deliveries.
    pub fn of(project: &str, event: &VerifiedEvent, headers: &HeaderMap, signature_header: &HeaderName) -> Self {
        let mut digest = Sha256::new();
        digest.update(project.as_bytes());
        digest.update(b"\0");
        match event.scheme() {
            MatchedScheme::Timestamped => {
                digest.update(b"timestamped\0");
                digest.update(event.timestamp().unwrap_or_default().as_bytes());
                digest.update(b"\0");
                let signature = headers.get(signature_header).map(|v| v.as_bytes()).unwrap_or_default();
                // Hex in either case is the same signature.
                digest.update(signature.trim_ascii().to_ascii_lowercase());
            }
            MatchedScheme::Body => {
                digest.update(b"body\0");
                digest.update(event.body());
            }
        }
        let digest = digest.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }
}

/// What a delivery is to this table when it arrives.
pub enum Seen<'a> {
    /// Not seen: now reserved. Store it, then say so, or drop the reservation.
    New(Reservation<'a>),
    /// Stored (enqueued or spooled) within the window: a duplicate.
    Stored,
    /// A copy of it is being stored right now, and may yet fail.
    InFlight,
}

/// A delivery being stored. Dropped without [`Reservation::stored`] (its store failed, or its
/// request was dropped), it is forgotten, so that a retry is stored.
#[must_use = "a reservation dropped at once forgets the delivery"]
pub struct Reservation<'a> {
    recent: &'a RecentDeliveries,
    key: DeliveryKey,
    /// Set by [`Reservation::stored`]: nothing left for `drop` to undo.
    settled: bool,
}

impl Reservation<'_> {
    /// The delivery is stored: its copies are duplicates from now on. `signed_ahead`: how far its
    /// signed timestamp is ahead of this relay's clock. Its signature is accepted until that
    /// timestamp is a window old, so a copy must be recognised that much longer than a window
    /// from now.
    pub fn stored(mut self, signed_ahead: Duration) {
        self.settled = true;
        let mut state = self.recent.state.lock().unwrap_or_else(|p| p.into_inner());
        state.pending.remove(&self.key);
        state.forget_expired(self.recent.now());
        while state.order.len() >= CAPACITY {
            state.forget_oldest();
        }
        let expires = self.recent.expiry(signed_ahead);
        state.expiry.insert(self.key, expires);
        state.order.push_back((expires, self.key));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.recent.state.lock().unwrap_or_else(|p| p.into_inner()).pending.remove(&self.key);
        }
    }
}

/// Keys of the deliveries enqueued within the last `window`, and of those being stored.
pub struct RecentDeliveries {
    window: Duration,
    /// Expiries are whole seconds since this instant: 4 bytes an entry instead of an `Instant`'s 16.
    epoch: Instant,
    state: Mutex<State>,
}

/// Seconds since [`RecentDeliveries::epoch`]; `u32` lasts 136 years.
type Second = u32;

struct State {
    /// Each remembered key and the second it expires at.
    expiry: HashMap<DeliveryKey, Second>,
    /// Insertion order, to expire and evict the oldest first.
    order: VecDeque<(Second, DeliveryKey)>,
    /// Deliveries reserved and not yet stored. Apart from `expiry`, so that neither expiry nor
    /// eviction can forget one mid-store, and no entry there needs a flag. Reserved only by a
    /// request holding a publishing permit, so at most `RELAY_MAX_IN_FLIGHT` of them.
    pending: HashSet<DeliveryKey>,
}

impl RecentDeliveries {
    /// `in_flight`: how many requests may be storing at once (`RELAY_MAX_IN_FLIGHT`).
    pub fn new(window: Duration, in_flight: usize) -> Self {
        // Allocated whole at start-up: the peak a full table reaches, and never the moment when a
        // growing map holds its old and new buckets at once. Untouched pages cost no memory
        // until entries land in them. So no webhook allocates here.
        let state = State {
            expiry: HashMap::with_capacity(CAPACITY),
            order: VecDeque::with_capacity(CAPACITY),
            pending: HashSet::with_capacity(in_flight),
        };
        Self { window, epoch: Instant::now(), state: Mutex::new(state) }
    }

    /// Whole seconds since the epoch, rounded down: a key is forgotten only once its expiry has
    /// fully passed.
    fn now(&self) -> Second {
        Second::try_from(self.epoch.elapsed().as_secs()).unwrap_or(Second::MAX)
    }

    /// When a key inserted now expires, rounded up: a delivery is remembered for the whole
    /// window, `beyond` it, and one second more, at most two seconds longer. The second: a
    /// signature is checked against the wall clock's whole seconds, so one made in the second
    /// the delivery is stored in verifies until up to a second past the window from now. This
    /// table counts its seconds from its own start, whose phase against the wall clock's is any.
    fn expiry(&self, beyond: Duration) -> Second {
        let expires = self.epoch.elapsed() + self.window + beyond + Duration::from_secs(1);
        let seconds = expires.as_secs() + u64::from(expires.subsec_nanos() > 0);
        Second::try_from(seconds).unwrap_or(Second::MAX)
    }

    /// What `key` is to the table, reserving it if it is new: one lock hold, so of copies that
    /// arrive together exactly one is [`Seen::New`].
    pub fn reserve(&self, key: DeliveryKey) -> Seen<'_> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        state.forget_expired(now);
        if state.expiry.get(&key).is_some_and(|expires| *expires > now) {
            Seen::Stored
        } else if !state.pending.insert(key) {
            Seen::InFlight
        } else {
            Seen::New(Reservation { recent: self, key, settled: false })
        }
    }
}

impl State {
    fn forget_expired(&mut self, now: Second) {
        while self.order.front().is_some_and(|(expires, _)| *expires <= now) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((expires, key)) = self.order.pop_front() {
            // A key inserted again later has a later expiry; keep that one.
            if self.expiry.get(&key) == Some(&expires) {
                self.expiry.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> DeliveryKey {
        DeliveryKey([n; 16])
    }

    fn table() -> RecentDeliveries {
        RecentDeliveries::new(Duration::from_secs(300), 8)
    }

    /// Reserves `key` and stores it at once, as a webhook confirmed without a wait would.
    fn store(recent: &RecentDeliveries, key: DeliveryKey, signed_ahead: Duration) {
        match recent.reserve(key) {
            Seen::New(reservation) => reservation.stored(signed_ahead),
            _ => panic!("already seen"),
        }
    }

    /// Whether a copy of `key` arriving now is a duplicate. A new key's reservation is dropped.
    fn is_duplicate(recent: &RecentDeliveries, key: DeliveryKey) -> bool {
        matches!(recent.reserve(key), Seen::Stored)
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_remembered_for_the_window_and_a_second() {
        let recent = table();
        tokio::time::advance(Duration::from_millis(500)).await;
        store(&recent, key(1), Duration::ZERO);
        assert!(is_duplicate(&recent, key(1)));
        assert!(!is_duplicate(&recent, key(2)));
        // Whole seconds, rounded towards remembering: still there a second past the window.
        tokio::time::advance(Duration::from_millis(300_999)).await;
        assert!(is_duplicate(&recent, key(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!is_duplicate(&recent, key(1)));
        assert!(recent.state.lock().unwrap().order.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_is_recognised_for_as_long_as_a_signature_of_the_same_second_verifies() {
        let recent = table();
        // Stored 0.9 s into one of the table's seconds, 0.1 s into the wall clock's: a signature
        // made in that wall second verifies until 300.9 s from now (at the window's tolerance).
        tokio::time::advance(Duration::from_millis(900)).await;
        store(&recent, key(1), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(300_800)).await;
        assert!(is_duplicate(&recent, key(1)), "the copy's signature still verifies");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_signed_ahead_of_the_clock_is_remembered_until_its_signature_goes_stale() {
        let recent = table();
        store(&recent, key(1), Duration::from_secs(5));
        store(&recent, key(2), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(303)).await;
        assert!(is_duplicate(&recent, key(1)), "its signature is still fresh here");
        assert!(!is_duplicate(&recent, key(2)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!is_duplicate(&recent, key(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_by_forgetting_the_oldest() {
        let recent = table();
        for n in 0..(CAPACITY + 10) {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            store(&recent, DeliveryKey(bytes), Duration::ZERO);
        }
        let state = recent.state.lock().unwrap();
        assert_eq!((state.order.len(), state.expiry.len(), state.pending.len()), (CAPACITY, CAPACITY, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_arriving_while_the_first_is_being_stored_is_told_it_is_in_flight_not_a_duplicate() {
        let recent = table();
        let Seen::New(first) = recent.reserve(key(1)) else { panic!("the first copy is new") };
        assert!(matches!(recent.reserve(key(1)), Seen::InFlight));
        assert!(matches!(recent.reserve(key(1)), Seen::InFlight), "and so is every copy after it");
        first.stored(Duration::ZERO);
        assert!(matches!(recent.reserve(key(1)), Seen::Stored));
        let state = recent.state.lock().unwrap();
        assert_eq!((state.order.len(), state.expiry.len(), state.pending.len()), (1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_whose_store_failed_is_forgotten_so_that_its_retry_is_stored() {
        let recent = table();
        let Seen::New(first) = recent.reserve(key(1)) else { panic!("the first copy is new") };
        assert!(matches!(recent.reserve(key(1)), Seen::InFlight));
        drop(first);
        let Seen::New(retry) = recent.reserve(key(1)) else { panic!("the retry is new again") };
        retry.stored(Duration::ZERO);
        assert!(is_duplicate(&recent, key(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_being_stored_is_neither_expired_nor_evicted_by_a_full_table() {
        let recent = table();
        let Seen::New(slow) = recent.reserve(key(0)) else { panic!("new") };
        for n in 1..=(CAPACITY + 10) {
            let mut bytes = [1u8; 16];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            store(&recent, DeliveryKey(bytes), Duration::ZERO);
        }
        tokio::time::advance(Duration::from_secs(400)).await;
        assert!(matches!(recent.reserve(key(0)), Seen::InFlight), "its copies still wait for its outcome");
        slow.stored(Duration::ZERO);
        assert!(is_duplicate(&recent, key(0)));
    }
}
