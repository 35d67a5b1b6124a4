//! Deliveries enqueued within the timestamp tolerance, so that a replay of one (a copy of a
//! signed request, under any event id) is answered `204 duplicate` instead of being enqueued
//! again (design §10). Memory is bounded: entries expire after the window, and past
//! [`CAPACITY`] the oldest are forgotten first, so a flood of distinct signed deliveries cannot
//! grow it; a replay of a forgotten one is enqueued again, as it was before this existed.

use std::{
    collections::{HashMap, VecDeque},
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

/// Keys of the deliveries enqueued within the last `window`.
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
}

impl RecentDeliveries {
    pub fn new(window: Duration) -> Self {
        // Allocated whole at start-up: the peak a full table reaches, and never the moment when a
        // growing map holds its old and new buckets at once. Untouched pages cost no memory
        // until entries land in them.
        let state = State { expiry: HashMap::with_capacity(CAPACITY), order: VecDeque::with_capacity(CAPACITY) };
        Self { window, epoch: Instant::now(), state: Mutex::new(state) }
    }

    /// Whole seconds since the epoch, rounded down: a key is forgotten only once its expiry has
    /// fully passed.
    fn now(&self) -> Second {
        Second::try_from(self.epoch.elapsed().as_secs()).unwrap_or(Second::MAX)
    }

    /// When a key inserted now expires, rounded up: a delivery is remembered for the whole
    /// window and `beyond` it, at most a second longer.
    fn expiry(&self, beyond: Duration) -> Second {
        let expires = self.epoch.elapsed() + self.window + beyond;
        let seconds = expires.as_secs() + u64::from(expires.subsec_nanos() > 0);
        Second::try_from(seconds).unwrap_or(Second::MAX)
    }

    /// Whether `key` was enqueued within the window.
    pub fn contains(&self, key: &DeliveryKey) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        state.forget_expired(now);
        state.expiry.get(key).is_some_and(|expires| *expires > now)
    }

    /// Records a delivery that was just enqueued. `signed_ahead`: how far its signed timestamp
    /// is ahead of this relay's clock. Its signature is accepted until that timestamp is a window
    /// old, so a copy must be recognised that much longer than a window from now.
    pub fn insert(&self, key: DeliveryKey, signed_ahead: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.forget_expired(self.now());
        while state.order.len() >= CAPACITY {
            state.forget_oldest();
        }
        let expires = self.expiry(signed_ahead);
        state.expiry.insert(key, expires);
        state.order.push_back((expires, key));
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

    #[tokio::test(start_paused = true)]
    async fn a_key_is_remembered_for_the_window_only() {
        let recent = RecentDeliveries::new(Duration::from_secs(300));
        tokio::time::advance(Duration::from_millis(500)).await;
        recent.insert(key(1), Duration::ZERO);
        assert!(recent.contains(&key(1)));
        assert!(!recent.contains(&key(2)));
        // Whole seconds, rounded towards remembering: still there at the window's last instant.
        tokio::time::advance(Duration::from_millis(299_999)).await;
        assert!(recent.contains(&key(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!recent.contains(&key(1)));
        assert!(recent.state.lock().unwrap().order.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_signed_ahead_of_the_clock_is_remembered_until_its_signature_goes_stale() {
        let recent = RecentDeliveries::new(Duration::from_secs(300));
        recent.insert(key(1), Duration::from_secs(5));
        recent.insert(key(2), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(302)).await;
        assert!(recent.contains(&key(1)), "its signature is still fresh here");
        assert!(!recent.contains(&key(2)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!recent.contains(&key(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_by_forgetting_the_oldest() {
        let recent = RecentDeliveries::new(Duration::from_secs(300));
        for n in 0..(CAPACITY + 10) {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            recent.insert(DeliveryKey(bytes), Duration::ZERO);
        }
        let state = recent.state.lock().unwrap();
        assert_eq!((state.order.len(), state.expiry.len()), (CAPACITY, CAPACITY));
    }
}
