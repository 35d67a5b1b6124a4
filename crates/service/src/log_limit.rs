//! Warnings that an outage repeats thousands of times (every 503, every reconnect attempt) are
//! said once, then at most once per interval with the number left unsaid meanwhile. The metrics
//! still count every occurrence; the log only has to say that it is happening.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How often one kind of repeated warning is logged at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Rate limit for warnings of several kinds, each kind (`key`) on its own.
pub struct LogLimit {
    interval: Duration,
    kinds: Mutex<HashMap<&'static str, Window>>,
}

struct Window {
    /// When a line of this kind was last logged.
    logged_at: Instant,
    /// Occurrences since then that were not logged.
    unsaid: u64,
}

impl LogLimit {
    pub fn new(interval: Duration) -> Self {
        Self { interval, kinds: Mutex::new(HashMap::new()) }
    }

    /// `Some(unsaid)`: log this occurrence, mentioning the `unsaid` ones since the last line;
    /// `None`: stay quiet, it was counted.
    pub fn admit(&self, key: &'static str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.get_mut(key) {
            Some(window) if now.duration_since(window.logged_at) < self.interval => {
                window.unsaid += 1;
                None
            }
            Some(window) => {
                let unsaid = std::mem::take(&mut window.unsaid);
                window.logged_at = now;
                Some(unsaid)
            }
            None => {
                kinds.insert(key, Window { logged_at: now, unsaid: 0 });
                Some(0)
            }
        }
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new(INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_kind_is_logged_the_rest_counted_until_the_interval_has_passed() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limit.admit_at("unavailable", start), Some(0));
        for i in 1..=5 {
            assert_eq!(limit.admit_at("unavailable", start + Duration::from_secs(i)), None);
        }
        // Another kind has its own window.
        assert_eq!(limit.admit_at("unauthorized", start + Duration::from_secs(2)), Some(0));
        assert_eq!(limit.admit_at("unavailable", start + Duration::from_secs(10)), Some(5));
        assert_eq!(limit.admit_at("unavailable", start + Duration::from_secs(11)), None);
        assert_eq!(limit.admit_at("unavailable", start + Duration::from_secs(25)), Some(1));
    }
}
