//! One project's pace of API calls: a fixed rate (`RELAY_API_RATE`) and a pause that any 429
//! extends for every call of the project, so one rate-limited call slows all of them, not just
//! itself. Each project has its own (its key has its own quota): one project's 429s never slow
//! another's calls.

use std::{sync::Mutex, time::Duration};

// tokio's clock, so tests can run it paused.
use tokio::time::Instant;

#[derive(Debug)]
pub struct Throttle {
    /// Spacing between calls; `None` for no rate limit.
    interval: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next_slot: Instant,
    paused_until: Instant,
}

impl Throttle {
    pub fn new(rate: Option<f64>) -> Self {
        let now = Instant::now();
        Self {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            state: Mutex::new(State { next_slot: now, paused_until: now }),
        }
    }

    /// Waits for this call's turn. The lock is held only to reserve a slot, never while waiting.
    pub async fn acquire(&self) {
        let (now, start) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = now.max(state.next_slot).max(state.paused_until);
            if let Some(interval) = self.interval {
                state.next_slot = start + interval;
            }
            (now, start)
        };
        // A call whose turn has come goes on at once: a timer already due would still be
        // registered and fired, a wake-up and a trip through the scheduler for every call.
        if start > now {
            tokio::time::sleep_until(start).await;
        }
    }

    /// Holds every call back for `delay` from now (a 429's Retry-After).
    pub fn pause(&self, delay: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.paused_until = state.paused_until.max(Instant::now() + delay);
    }

    /// What is left of a pause, if one is running: an event that would wait that long waits in a
    /// delay queue instead, not in memory where it would hold a slot other projects could use.
    pub fn held_back(&self) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let left = state.paused_until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_rate() {
        let throttle = Throttle::new(Some(10.0));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            throttle.acquire().await;
        }
        // Four gaps of 100 ms after the first call.
        assert!(start.elapsed() >= Duration::from_millis(400));
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_back_every_caller() {
        let throttle = Throttle::new(None);
        throttle.pause(Duration::from_secs(3));
        let start = tokio::time::Instant::now();
        throttle.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_call_whose_turn_has_come_does_not_wait_for_the_scheduler() {
        let throttle = Throttle::new(None);
        let acquire = std::pin::pin!(throttle.acquire());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(acquire.poll(&mut context).is_ready(), "no rate and no pause: ready at the first poll");
    }

    #[tokio::test(start_paused = true)]
    async fn held_back_says_what_is_left_of_a_pause() {
        let throttle = Throttle::new(Some(1.0));
        assert_eq!(throttle.held_back(), None, "the rate alone holds nothing back");
        throttle.pause(Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(throttle.held_back(), Some(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(throttle.held_back(), None);
    }
}
