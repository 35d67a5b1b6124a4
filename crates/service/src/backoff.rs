//! Exponential backoff with jitter: the one formula behind every wait before trying again
//! (API retries, broker reconnects, publishes through an outage, backfill's list requests).

use std::time::Duration;

/// Waits that double from `base` up to `max`, each scaled by a random factor in [0.5, 1.0] so
/// that a burst of failures does not come back as a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// Reaching a broker again (the publisher's connection, the worker's consumer): 100 ms doubling
/// to 3 s, so a broker that comes back is in use within seconds, never hammered meanwhile.
pub const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The wait after `failures` failures in a row (1 for the first): base × 2^(failures-1),
    /// capped at `max`, jittered.
    pub fn delay(&self, failures: u32) -> Duration {
        jittered(self.ceiling(failures))
    }

    /// The longest [`Self::delay`] can be after `failures` failures.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1u32 << exponent).min(self.max)
    }
}

/// `ceiling` scaled by a random factor in [0.5, 1.0].
pub fn jittered(ceiling: Duration) -> Duration {
    ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_stay_under_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(600));
        for _ in 0..100 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2), "{first:?}");
            let third = backoff.delay(3);
            assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8), "{third:?}");
            assert!(backoff.delay(40) <= Duration::from_secs(600));
        }
        assert_eq!(backoff.ceiling(0), Duration::from_secs(2), "no failure yet waits like the first");
    }

    #[test]
    fn reconnects_reach_their_cap_within_a_few_failures() {
        assert_eq!(RECONNECT.ceiling(1), Duration::from_millis(100));
        assert_eq!(RECONNECT.ceiling(6), Duration::from_secs(3));
        assert_eq!(RECONNECT.ceiling(1000), Duration::from_secs(3));
    }
}
