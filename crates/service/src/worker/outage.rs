//! Riding out an API outage: a failed call counts towards `RELAY_MAX_ATTEMPTS` only while the API
//! answers the project's other calls.
//!
//! Counted from the first failure, `RELAY_MAX_ATTEMPTS` retries doubling from
//! `RELAY_RETRY_BASE_DELAY` rode out 2–4 minutes of an outage with the defaults: every call that
//! ended in a longer one was dead-lettered, to be replayed by hand. A call the API gave no answer
//! to (a 5xx, a 408, a timeout, no connection) tells an outage from a failing call only beside
//! the project's other calls, so the event carries when its calls last failed, and:
//!
//! - its first failure counts, as does one after the API answered any call of the project since
//!   its previous failure: the event's own call is what fails, and it is dead-lettered once its
//!   attempts are spent;
//! - otherwise the API is down: the event waits it out in a delay queue, counting no attempt,
//!   each wait as long as it has been failing (so the waits still double), up to
//!   `RELAY_RETRY_MAX_DELAY`;
//! - after [`RIDE_OUT`] of failing every failure counts again, so a call that fails in a project
//!   whose other calls never come (a quiet project) still ends among the dead letters.
//!
//! Each process knows only the answers to its own calls, and a worker with several replicas sees
//! its share: a failure can count for want of an answer another replica got, never the reverse.

use std::time::Duration;

use super::RetryPolicy;
use crate::{
    backoff::jittered,
    polyai::PolyaiClient,
    queue::{headers, Message},
};

/// How long an event's calls may fail, with no answer from the API, before its failures count
/// again: a day, far beyond any outage PolyAI has had, and within what the log (7 days) and
/// reconciliation's window (24 h) look back on.
pub(super) const RIDE_OUT: Duration = Duration::from_secs(24 * 3600);

/// When an event's calls failed with no answer from the API, from its headers, unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failing {
    /// The first of those failures.
    since: Option<u64>,
    /// The latest.
    last: Option<u64>,
}

/// What becomes of a failure the API gave no answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It counts as an attempt: the event's own call fails.
    Counts,
    /// The API is down: the event waits this long, its attempts untouched.
    WaitsOut(Duration),
}

impl Failing {
    pub fn of(message: &Message) -> Self {
        let read = |name| message.header(name).and_then(|v| v.trim().parse::<u64>().ok());
        Self { since: read(headers::FAILING_SINCE), last: read(headers::FAILED_AT) }
    }

    /// Judges a failure at `now` (unix ms) by what `client` was answered since the previous one.
    pub fn judge(&self, client: &PolyaiClient, policy: &RetryPolicy, now: u64) -> Verdict {
        self.judge_by(|at| client.answered_since(at), policy, now)
    }

    fn judge_by(&self, answered_since: impl Fn(u64) -> bool, policy: &RetryPolicy, now: u64) -> Verdict {
        let Some(last) = self.last else { return Verdict::Counts };
        // A time ahead of this clock (another pod's, or a header set by hand) is taken for now,
        // or its failures would wait until the clocks met.
        let last = last.min(now);
        if answered_since(last) {
            return Verdict::Counts;
        }
        let failing = Duration::from_millis(now - self.since.unwrap_or(last).min(last));
        if failing >= RIDE_OUT {
            return Verdict::Counts;
        }
        Verdict::WaitsOut(jittered(failing.clamp(policy.base_delay, policy.max_delay)))
    }

    /// `message` stamped with a failure at `now`, as it goes back to wait.
    pub fn stamped(&self, message: &Message, now: u64) -> Message {
        let mut stamped = message.clone();
        let since = self.since.unwrap_or(now).min(now);
        stamped.headers.insert(headers::FAILING_SINCE.to_owned(), since.to_string());
        stamped.headers.insert(headers::FAILED_AT.to_owned(), now.to_string());
        stamped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 8, base_delay: Duration::from_secs(2), max_delay: Duration::from_secs(600) }
    }

    fn failing(since: u64, last: u64) -> Failing {
        Failing { since: Some(since), last: Some(last) }
    }

    fn within(verdict: Verdict, ceiling: Duration) -> bool {
        matches!(verdict, Verdict::WaitsOut(wait) if wait >= ceiling / 2 && wait <= ceiling)
    }

    #[test]
    fn a_first_failure_counts() {
        let first = Failing::of(&Message::sample());
        assert_eq!(first, Failing { since: None, last: None });
        assert_eq!(first.judge_by(|_| false, &policy(), NOW), Verdict::Counts);
    }

    #[test]
    fn a_failure_counts_when_the_api_answered_another_call_since_the_previous_one() {
        let answered_at = NOW - 1_000;
        let answered_since = |at| answered_at >= at;
        assert_eq!(failing(NOW - 60_000, NOW - 2_000).judge_by(answered_since, &policy(), NOW), Verdict::Counts);
        let before = failing(NOW - 60_000, NOW - 500).judge_by(answered_since, &policy(), NOW);
        assert!(within(before, Duration::from_secs(60)), "answered before it: the API is down since, {before:?}");
    }

    #[test]
    fn an_outage_is_waited_out_as_long_as_it_has_lasted_between_the_delays() {
        let p = policy();
        let down = |since: u64| failing(NOW - since, NOW - 100).judge_by(|_| false, &p, NOW);
        assert!(within(down(500), Duration::from_secs(2)), "at least the base delay");
        assert!(within(down(30_000), Duration::from_secs(30)));
        assert!(within(down(3_600_000), Duration::from_secs(600)), "at most the longest delay");
        assert!(within(down(RIDE_OUT.as_millis() as u64 - 1), Duration::from_secs(600)));
        assert_eq!(down(RIDE_OUT.as_millis() as u64), Verdict::Counts, "a day of failing counts again");
    }

    #[test]
    fn times_ahead_of_the_clock_are_taken_for_now() {
        let ahead = failing(NOW + 3_600_000, NOW + 3_600_000);
        assert_eq!(ahead.judge_by(|at| at <= NOW, &policy(), NOW), Verdict::Counts, "answered now counts");
        assert!(within(ahead.judge_by(|_| false, &policy(), NOW), Duration::from_secs(2)));
        let stamped = ahead.stamped(&Message::sample(), NOW);
        assert_eq!(stamped.header(headers::FAILING_SINCE), Some(NOW.to_string().as_str()));
        assert_eq!(stamped.header(headers::FAILED_AT), Some(NOW.to_string().as_str()));
    }

    #[test]
    fn the_first_failure_is_kept_and_the_latest_replaced() {
        let first = Failing::of(&Message::sample()).stamped(&Message::sample(), NOW - 5_000);
        let second = Failing::of(&first).stamped(&first, NOW);
        assert_eq!(Failing::of(&second), failing(NOW - 5_000, NOW));
    }
}
