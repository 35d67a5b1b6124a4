//! The pace of reconnecting to the queue, one function for the publisher and the worker's
//! consumer alike, so that after an outage both are back at the same moment.

use std::time::Duration;

/// First wait after a failed attempt.
const FIRST: Duration = Duration::from_millis(100);

/// Longest wait between attempts: a broker that comes back is in use again within this.
const CEILING: Duration = Duration::from_secs(3);

/// Exponential backoff with jitter between reconnect attempts: 100 ms doubling to 3 s, so a
/// broker that comes back is in use again within a few seconds, never hammered meanwhile. The
/// jitter (half to all of the step) keeps many relays from reconnecting in lockstep.
pub fn reconnect_delay(failures: u32) -> Duration {
    let step = FIRST.saturating_mul(1 << failures.min(5)).min(CEILING);
    step.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_starts_short_grows_and_stays_under_the_ceiling() {
        for failures in 0..64 {
            let delay = reconnect_delay(failures);
            assert!(delay <= CEILING, "{failures}: {delay:?}");
            assert!(delay >= FIRST / 2, "{failures}: {delay:?}");
        }
        assert!(reconnect_delay(0) <= FIRST);
        assert!(reconnect_delay(10) >= CEILING / 2);
    }
}
