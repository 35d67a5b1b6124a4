//! One project's pace of API calls: a fixed rate (`RELAY_API_RATE`) and a pause that any 429
//! extends for every call of the project, so one rate-limited call slows all of them, not just
//! itself. A 429 pauses the longer the more of them come in a row, its `Retry-After` or longer. Each
//! project has its own (its key has its own quota): one project's 429s never slow another's
//! calls. An event whose turn is far off reserves it ([`Throttle::reserve`]) and waits for it
//! outside memory; its calls then take that turn ([`Turn::At`]) instead of the next one.

use std::{sync::Mutex, time::Duration};

// tokio's clock, so tests can run it paused.
use tokio::time::Instant;

/// When a call goes.
#[derive(Debug, Clone, Copy)]
pub enum Turn {
    /// The next turn of the project's schedule, taken as the call goes (no `RELAY_API_RATE`).
    Next,
    /// A turn reserved before ([`Throttle::reserve`]), due at this moment.
    At(Instant),
}

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
    /// 429s since the last call the API answered, each after the pause the one before set: how
    /// many times the next pause doubles.
    refused_in_a_row: u32,
}

impl Throttle {
    pub fn new(rate: Option<f64>) -> Self {
        let now = Instant::now();
        Self {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            state: Mutex::new(State { next_slot: now, paused_until: now, refused_in_a_row: 0 }),
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

    /// The spacing between calls; `None` for no rate limit.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Reserves `calls` turns in a row and returns when the first is due, for an event that
    /// waits for them elsewhere than in memory (a delay queue): with a rate, a backlog of one
    /// project would otherwise fill every in-progress slot with events waiting their turn, and
    /// other projects' events would wait behind them. Those reserved advance the project's
    /// schedule as calls do, so an event arriving later gets a later turn. `None` without a rate.
    pub fn reserve(&self, calls: u32) -> Option<Instant> {
        let interval = self.interval?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let start = Instant::now().max(state.next_slot).max(state.paused_until);
        state.next_slot = start + interval * calls;
        Some(start)
    }

    /// A turn reserved elsewhere (another replica, or this process before a restart) is due at
    /// `due` for `calls` calls: this schedule goes past it, so that events arriving from now on
    /// get turns after the ones already given out.
    pub fn reserved_elsewhere(&self, due: Instant, calls: u32) {
        let Some(interval) = self.interval else { return };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.next_slot = state.next_slot.max(due + interval * calls);
    }

    /// Waits for a call's turn: the next one, or one reserved before. `Err` as for
    /// [`Throttle::wait_for`], and for the next turn when a 429's pause holds it further than
    /// `in_memory` away (a pause that began after the event last looked, or a second call of
    /// the event's): the event waits elsewhere rather than hold its slot through the pause.
    pub async fn take(&self, turn: Turn, in_memory: Duration) -> Result<(), Duration> {
        match turn {
            Turn::Next => {
                if let Some(left) = self.held_back().filter(|left| *left > in_memory) {
                    return Err(left);
                }
                self.acquire().await;
                Ok(())
            }
            Turn::At(at) => self.wait_for(at, in_memory).await,
        }
    }

    /// Waits until `turn`, a call's reserved time. A turn a 429's pause has passed is given up
    /// for the next one after the pause, as a call without a turn would take: every turn inside
    /// the pause going at its end would be a burst inviting the next 429. When that next turn is
    /// further than `in_memory` away (the schedule holds a backlog's turns), none is taken and
    /// `Err` says how far it is: the event waits for it elsewhere, holding no slot meanwhile.
    pub async fn wait_for(&self, turn: Instant, in_memory: Duration) -> Result<(), Duration> {
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if turn >= state.paused_until {
                turn
            } else {
                let start = now.max(state.next_slot).max(state.paused_until);
                if start - now > in_memory {
                    return Err(start - now);
                }
                if let Some(interval) = self.interval {
                    state.next_slot = start + interval;
                }
                start
            }
        };
        // As in `acquire`: a turn that has come costs no timer.
        if start > Instant::now() {
            tokio::time::sleep_until(start).await;
        }
        Ok(())
    }

    /// Holds every call back for `delay` from now.
    #[cfg(test)]
    pub fn pause(&self, delay: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.paused_until = state.paused_until.max(Instant::now() + delay);
    }

    /// Holds every call back after a 429, and returns for how long: its `Retry-After` (up to
    /// `cap`), but at least `base` doubled for each 429 in a row, up to `cap`. So a `Retry-After`
    /// of 0, or any shorter than the API actually needs, does not have the same burst of calls
    /// refused every second for as long as the API refuses them. A 429 that comes while a pause
    /// runs answered a call made before it began, so it is not one more in the row: the pause
    /// runs on, lengthened to its `Retry-After`, and what is left of it is returned.
    pub fn pause_after_429(&self, retry_after: Option<Duration>, base: Duration, cap: Duration) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let asked = retry_after.unwrap_or_default().min(cap);
        if state.paused_until > now {
            state.paused_until = state.paused_until.max(now + asked);
            return state.paused_until - now;
        }
        let doublings = state.refused_in_a_row.min(16);
        state.refused_in_a_row = state.refused_in_a_row.saturating_add(1);
        let pause = base.saturating_mul(1 << doublings).min(cap).max(asked);
        state.paused_until = now + pause;
        pause
    }

    /// The API served a call of the project: the next 429 starts the row again.
    pub fn answered(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).refused_in_a_row = 0;
    }

    /// When the running pause ends, if one is running.
    pub fn paused_until(&self) -> Option<Instant> {
        let paused_until = self.state.lock().unwrap_or_else(|p| p.into_inner()).paused_until;
        (paused_until > Instant::now()).then_some(paused_until)
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
    async fn reserved_turns_advance_the_schedule_by_their_calls() {
        let throttle = Throttle::new(Some(2.0));
        let now = Instant::now();
        assert_eq!(throttle.reserve(2), Some(now), "the first turn is now");
        assert_eq!(throttle.reserve(1), Some(now + Duration::from_secs(1)), "after two calls' turns");
        assert_eq!(throttle.reserve(1), Some(now + Duration::from_millis(1500)));
        // A call that reserves none comes after them.
        let start = Instant::now();
        throttle.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(Throttle::new(None).reserve(1), None, "no rate, no turns");
    }

    #[tokio::test(start_paused = true)]
    async fn turns_given_out_elsewhere_push_the_schedule_past_them() {
        let throttle = Throttle::new(Some(2.0));
        let now = Instant::now();
        throttle.reserved_elsewhere(now + Duration::from_secs(10), 2);
        assert_eq!(throttle.reserve(1), Some(now + Duration::from_secs(11)), "after the two calls due in 10 s");
        throttle.reserved_elsewhere(now, 1);
        assert_eq!(throttle.reserve(1), Some(now + Duration::from_millis(11_500)), "one due now changes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn turns_a_pause_passed_are_spaced_after_it_not_fired_at_its_end() {
        let throttle = Throttle::new(Some(10.0));
        let turns = [throttle.reserve(1).unwrap(), throttle.reserve(1).unwrap()];
        throttle.pause(Duration::from_secs(3));
        let (start, in_memory) = (Instant::now(), Duration::from_secs(5));
        throttle.wait_for(turns[0], in_memory).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        throttle.wait_for(turns[1], in_memory).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(3100), "the next turn after the pause");
        // A turn after the pause keeps its time.
        let later = Instant::now() + Duration::from_secs(5);
        throttle.wait_for(later, in_memory).await.unwrap();
        assert_eq!(Instant::now(), later);
    }

    /// The turn after a backlog's is an hour away: waiting for it in memory would hold the
    /// event's slot for that hour.
    #[tokio::test(start_paused = true)]
    async fn a_turn_a_pause_passes_is_not_waited_for_behind_a_backlog() {
        let throttle = Throttle::new(Some(1.0));
        let near = throttle.reserve(1).unwrap() + Duration::from_millis(500);
        let backlog_ends = throttle.reserve(3_600).unwrap() + Duration::from_secs(3_600);
        throttle.pause(Duration::from_secs(3));
        let waited = Instant::now();
        let wait = throttle.wait_for(near, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(waited.elapsed(), Duration::ZERO, "told at once");
        assert_eq!(wait, backlog_ends - Instant::now(), "how far the next turn is");
        assert_eq!(throttle.reserve(1), Some(backlog_ends), "and it is not taken");
    }

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
    async fn a_429_without_retry_after_pauses_longer_each_time_in_a_row_until_answered() {
        let (base, cap) = (Duration::from_secs(2), Duration::from_secs(60));
        let throttle = Throttle::new(None);
        let mut pauses = Vec::new();
        for _ in 0..7 {
            pauses.push(throttle.pause_after_429(None, base, cap));
            // The refused calls go again once the pause is over, and are refused again.
            throttle.acquire().await;
        }
        let secs: Vec<u64> = pauses.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60]);

        // Calls made before the pause began are refused during it: not more in the row.
        assert_eq!(throttle.pause_after_429(None, base, cap), cap);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(throttle.pause_after_429(None, base, cap), Duration::from_secs(40));
        assert_eq!(throttle.held_back(), Some(Duration::from_secs(40)));

        throttle.acquire().await;
        throttle.answered();
        assert_eq!(throttle.pause_after_429(None, base, cap), base, "an answer starts the row again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_for_its_retry_after_but_no_less_than_its_row_has_grown_to() {
        let (base, cap) = (Duration::from_secs(2), Duration::from_secs(60));
        let secs = |pause: Duration| pause.as_secs();
        let throttle = Throttle::new(None);
        let mut pauses = Vec::new();
        for _ in 0..5 {
            pauses.push(secs(throttle.pause_after_429(Some(Duration::ZERO), base, cap)));
            throttle.acquire().await;
        }
        assert_eq!(pauses, [2, 4, 8, 16, 32], "`Retry-After: 0` in a row backs off all the same");

        throttle.answered();
        assert_eq!(secs(throttle.pause_after_429(Some(Duration::from_secs(5)), base, cap)), 5, "obeyed");
        // A 429 during the pause, to a call made before it: the pause is lengthened, the row not.
        assert_eq!(secs(throttle.pause_after_429(Some(Duration::from_secs(20)), base, cap)), 20);
        assert_eq!(secs(throttle.pause_after_429(Some(Duration::from_secs(1)), base, cap)), 20, "never shortened");
        throttle.acquire().await;
        assert_eq!(secs(throttle.pause_after_429(None, base, cap)), 4, "the second in the row");
        throttle.acquire().await;
        let long = Some(Duration::from_secs(7200));
        assert_eq!(throttle.pause_after_429(long, base, cap), cap, "the project's calls wait `cap` at most");
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_turn_is_not_waited_for_in_memory_through_a_long_pause() {
        let in_memory = Duration::from_secs(1);
        let throttle = Throttle::new(None);
        throttle.pause(Duration::from_secs(30));
        assert_eq!(throttle.take(Turn::Next, in_memory).await, Err(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_millis(29_500)).await;
        let start = Instant::now();
        assert_eq!(throttle.take(Turn::Next, in_memory).await, Ok(()), "what is left is waited for");
        assert_eq!(start.elapsed(), Duration::from_millis(500));
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
