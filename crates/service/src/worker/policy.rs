//! How long to wait before the next attempt, and when to give up (design §5's retry table).

use std::time::Duration;

use crate::{backoff::Backoff, polyai::RETRY_AFTER_CAP};

/// Attempts at a 404 before the event is dead-lettered: enough for a conversation that is not
/// ingested yet to appear, few enough that a wrong id does not linger.
pub const NOT_FOUND_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts (1 for the first failure), doubling from
    /// `RELAY_RETRY_BASE_DELAY` to `RELAY_RETRY_MAX_DELAY`, jittered.
    pub fn backoff(&self, attempts: u32) -> Duration {
        Backoff::new(self.base_delay, self.max_delay).delay(attempts)
    }

    /// A 404 means "not ingested yet" at first: wait longer than for a 5xx, so the retries span minutes.
    pub fn not_found_backoff(&self, attempts: u32) -> Duration {
        self.backoff(attempts + 3)
    }

    /// A 429's wait (its `Retry-After`, or the project's pause when it gave none), obeyed up to
    /// [`RETRY_AFTER_CAP`].
    pub fn rate_limited(&self, wait: Duration) -> Duration {
        wait.clamp(Duration::from_millis(100), RETRY_AFTER_CAP)
    }

    pub fn gives_up_on_not_found(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts.min(NOT_FOUND_ATTEMPTS)
    }

    pub fn gives_up(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 8, base_delay: Duration::from_secs(2), max_delay: Duration::from_secs(600) }
    }

    #[test]
    fn backoff_runs_between_the_configured_delays() {
        let p = policy();
        let first = p.backoff(1);
        assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2), "{first:?}");
        assert!(p.backoff(40) <= Duration::from_secs(600));
    }

    #[test]
    fn not_found_waits_longer_and_gives_up_sooner() {
        let p = policy();
        assert!(p.not_found_backoff(1) >= Duration::from_secs(8));
        assert!(!p.gives_up_on_not_found(4));
        assert!(p.gives_up_on_not_found(5));
        assert!(!p.gives_up(7));
        assert!(p.gives_up(8));
    }

    #[test]
    fn retry_after_is_obeyed_within_bounds() {
        let p = policy();
        assert_eq!(p.rate_limited(Duration::from_secs(7)), Duration::from_secs(7));
        assert_eq!(p.rate_limited(Duration::from_secs(900)), Duration::from_secs(900));
        assert_eq!(p.rate_limited(Duration::from_secs(7200)), RETRY_AFTER_CAP);
        assert_eq!(p.rate_limited(Duration::ZERO), Duration::from_millis(100));
    }
}
