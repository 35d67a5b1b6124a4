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

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::signature::{MatchedScheme, VerifiedEvent};

/// Entries at most: 64 Ki × (32-byte key + bookkeeping) is a few MB.
const CAPACITY: usize = 1 << 16;

/// What makes two deliveries the same: for the timestamped scheme, the signature and the
/// timestamp it covers; for the body scheme, the body's digest (its signature adds nothing).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey([u8; 32]);

impl DeliveryKey {
    /// `project`: the same body sent to two projects' paths is two deliveries.
    pub fn of(project: &str, event: &VerifiedEvent, headers: &HeaderMap, signature_header: &str) -> Self {
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
        Self(digest.finalize().into())
    }
}

/// Keys of the deliveries enqueued within the last `window`.
pub struct RecentDeliveries {
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    expiry: HashMap<DeliveryKey, Instant>,
    /// Insertion order, to expire and evict the oldest first.
    order: VecDeque<(Instant, DeliveryKey)>,
}

impl RecentDeliveries {
    pub fn new(window: Duration) -> Self {
        Self { window, state: Mutex::new(State::default()) }
    }

    /// Whether `key` was enqueued within the window.
    pub fn contains(&self, key: &DeliveryKey) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state.forget_expired(now);
        state.expiry.get(key).is_some_and(|expires| *expires > now)
    }

    /// Records a delivery that was just enqueued.
    pub fn insert(&self, key: DeliveryKey) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state.forget_expired(now);
        while state.order.len() >= CAPACITY {
            state.forget_oldest();
        }
        let expires = now + self.window;
        state.expiry.insert(key, expires);
        state.order.push_back((expires, key));
    }
}

impl State {
    fn forget_expired(&mut self, now: Instant) {
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
        DeliveryKey([n; 32])
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_remembered_for_the_window_only() {
        let recent = RecentDeliveries::new(Duration::from_secs(300));
        recent.insert(key(1));
        assert!(recent.contains(&key(1)));
        assert!(!recent.contains(&key(2)));
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(!recent.contains(&key(1)));
        assert!(recent.state.lock().unwrap().order.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_by_forgetting_the_oldest() {
        let recent = RecentDeliveries::new(Duration::from_secs(300));
        for n in 0..(CAPACITY + 10) {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            recent.insert(DeliveryKey(bytes));
        }
        let state = recent.state.lock().unwrap();
        assert_eq!((state.order.len(), state.expiry.len()), (CAPACITY, CAPACITY));
    }
}
