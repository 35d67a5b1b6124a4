//! Riding out an API outage: a failed call counts towards `RELAY_MAX_ATTEMPTS` only while the API
//! answers the project's other calls of its kind.
//!
//! Counted from the first failure, `RELAY_MAX_ATTEMPTS` retries doubling from
//! `RELAY_RETRY_BASE_DELAY` rode out 2–4 minutes of an outage with the defaults: every call that
//! ended in a longer one was dead-lettered, to be replayed by hand. A call the API gave no answer
//! to (a 5xx, a 408, a timeout, no connection, a 200 that cannot be read) tells an outage from a
//! failing call only beside the project's other calls, so the event carries when its calls
//! failed, and:
//!
//! - its first failure counts, as does one after the API answered any call of the project of the
//!   same kind (conversations, or recordings) since its previous failure: the event's own call is
//!   what fails, and it is dead-lettered once its attempts are spent;
//! - otherwise the API is down: the event waits it out in a delay queue, counting no attempt,
//!   each wait as long as it has been failing (so the waits still double), up to
//!   `RELAY_RETRY_MAX_DELAY`;
//! - after [`RIDE_OUT`] of failing every failure counts, so a call that fails in a project whose
//!   other calls seldom come (a quiet project) still ends among the dead letters within a day
//!   or so. The day runs from the event's first failure until an answer to its own call (a 404,
//!   a 429, a refused key) or a hold for its project's (a 429's pause, a refused key) ends the
//!   run: a day held behind a refused key does not use up the day of the outage that follows.
//!
//! Each process knows only the answers to its own calls: with several workers, a failure whose
//! project another worker was answered for meanwhile can wait when it would have counted.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::RetryPolicy;
use crate::{
    backoff::jittered,
    polyai::{ApiError, KeyedCall},
    queue::{headers, Message, RETRY_TIERS},
};

/// How long after the first failure of an event's run (see [`run_over`]) its failures
/// count again: a day, far beyond any outage PolyAI has had, and within what the log (7 days)
/// and reconciliation's window (24 h) look back on.
pub(super) const RIDE_OUT: Duration = Duration::from_secs(24 * 3600);

/// The longest wait is at least this, whatever `RELAY_RETRY_MAX_DELAY` says: waits below a second
/// for a day would be a busy loop against a down API.
const LONGEST_WAIT_AT_LEAST: Duration = RETRY_TIERS[0];

/// The kinds of call judged apart: a recordings outage is not one of conversations, and an
/// event's own conversation, answered, must not make its recording's failure count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    Conversation,
    Recording,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conversation => "conversation",
            Self::Recording => "recording",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Conversation, Self::Recording].into_iter().find(|kind| kind.as_str() == text.trim())
    }
}

impl From<&KeyedCall> for CallKind {
    fn from(call: &KeyedCall) -> Self {
        match call {
            KeyedCall::Conversation { .. } => Self::Conversation,
            KeyedCall::Recording { .. } => Self::Recording,
        }
    }
}

/// When the API last answered a project's calls of each kind as a working service: anything but
/// an [`ApiError::is_unanswered`]. A 404, a 429 or a refused key is the API at work.
#[derive(Debug, Default)]
pub(super) struct Answered {
    /// Unix ms of the latest answer of each kind; 0 before the first.
    conversations: AtomicU64,
    recordings: AtomicU64,
}

impl Answered {
    /// Notes how a call went, once its answer is read through.
    pub fn note<T>(&self, call: CallKind, result: &Result<T, ApiError>, now: u64) {
        match result {
            Ok(_) => self.answer(call, now),
            Err(error) => self.note_error(call, error, now),
        }
    }

    /// Notes a call that failed: an answer all the same, unless [`ApiError::is_unanswered`].
    pub fn note_error(&self, call: CallKind, error: &ApiError, now: u64) {
        if !error.is_unanswered() {
            self.answer(call, now);
        }
    }

    /// Notes an answer: the API was at work, whatever became of its answer here.
    pub fn answer(&self, call: CallKind, now: u64) {
        self.clock(call).fetch_max(now, Ordering::Relaxed);
    }

    /// Whether a call of that kind was answered at or after `unix_ms`. At, too: one answered in
    /// the millisecond a failure was judged in counts, so a failure is never taken for an outage
    /// for want of a clock's resolution.
    pub fn since(&self, call: CallKind, unix_ms: u64) -> bool {
        let last = self.clock(call).load(Ordering::Relaxed);
        last != 0 && last >= unix_ms
    }

    fn clock(&self, call: CallKind) -> &AtomicU64 {
        match call {
            CallKind::Conversation => &self.conversations,
            CallKind::Recording => &self.recordings,
        }
    }
}

/// When an event's calls failed with no answer from the API, from its headers, unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failing {
    /// The first of the run: until an answer to the event's own call of the run's kind.
    since: Option<u64>,
    /// The latest.
    last: Option<u64>,
    /// Of which kind of call; none in headers written before the kind was.
    call: Option<CallKind>,
}

/// What becomes of a failure the API gave no answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It counts as an attempt: the event's own call fails.
    Counts,
    /// The API is down: the event waits this long, its attempts untouched.
    WaitsOut(Duration),
}

/// A failure judged: what becomes of it, and since when the event has been failing with no
/// answer between, counting this failure (what its next failure is judged by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Judged {
    pub verdict: Verdict,
    since: u64,
    call: CallKind,
}

impl Failing {
    pub fn of(message: &Message) -> Self {
        let read = |name| message.header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let call = message.header(headers::FAILING_CALL).and_then(CallKind::parse);
        Self { since: read(headers::FAILING_SINCE), last: read(headers::FAILED_AT), call }
    }

    /// Whether the event is in a run of failures of that kind of call.
    pub fn of_kind(&self, call: CallKind) -> bool {
        self.last.is_some() && self.call == Some(call)
    }

    /// Judges a failure at `now` (unix ms) by whether the API answered another call of its kind
    /// (`answered_since`) since the previous one.
    pub fn judge(
        &self,
        call: CallKind,
        answered_since: impl Fn(u64) -> bool,
        policy: &RetryPolicy,
        now: u64,
    ) -> Judged {
        let first = Judged { verdict: Verdict::Counts, since: now, call };
        // A run of the other kind's failures says nothing of this call: its conversation was
        // answered this time, and now its recording fails.
        let Some(last) = self.last.filter(|_| self.call.is_none_or(|run| run == call)) else { return first };
        // A time ahead of this clock (another pod's, or a header set by hand) is taken for now,
        // or its failures would wait until the clocks met.
        let last = last.min(now);
        let since = self.since.unwrap_or(last).min(last);
        // Answered since: the event's own call is what fails. Its run goes on (only an answer to
        // that call ends it, see [`run_over`]), so the day is counted from its first failure.
        if answered_since(last) {
            return Judged { verdict: Verdict::Counts, since, call };
        }
        let failing = Duration::from_millis(now - since);
        if failing >= RIDE_OUT {
            return Judged { verdict: Verdict::Counts, since, call };
        }
        let longest = policy.max_delay.max(LONGEST_WAIT_AT_LEAST);
        Judged { verdict: Verdict::WaitsOut(jittered(failing.clamp(policy.base_delay, longest))), since, call }
    }
}

/// Ends an event's run of failures: its own call of the run's kind was answered (`Some`: a 429, a
/// refused key), or its project's calls are held for an answer the API gave (`None`: a 429's
/// pause, a refused key). What fails next starts a new run, with a day of its own.
pub(super) fn run_over(message: &mut Message, answered: Option<CallKind>) {
    let run = Failing::of(message).call;
    if answered.is_none_or(|call| run.is_none_or(|run| run == call)) {
        for name in headers::FAILING {
            message.headers.remove(name);
        }
    }
}

impl Judged {
    /// `message` stamped with this failure at `now`, as it goes back to wait.
    pub fn stamped(&self, message: &Message, now: u64) -> Message {
        let mut stamped = message.clone();
        stamped.headers.insert(headers::FAILING_SINCE.to_owned(), self.since.to_string());
        stamped.headers.insert(headers::FAILED_AT.to_owned(), now.to_string());
        stamped.headers.insert(headers::FAILING_CALL.to_owned(), self.call.as_str().to_owned());
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
        Failing { since: Some(since), last: Some(last), call: Some(CallKind::Conversation) }
    }

    fn waits_within(judged: Judged, low: Duration, high: Duration) -> bool {
        matches!(judged.verdict, Verdict::WaitsOut(wait) if wait >= low && wait <= high)
    }

    #[test]
    fn an_event_is_in_a_run_of_the_kind_its_headers_name() {
        let recording = Failing { call: Some(CallKind::Recording), ..failing(NOW, NOW) };
        assert!(recording.of_kind(CallKind::Recording));
        assert!(!recording.of_kind(CallKind::Conversation));
        assert!(failing(NOW, NOW).of_kind(CallKind::Conversation));
        // Headers written before the kind was: not known to be a recording's run.
        assert!(!Failing { call: None, ..failing(NOW, NOW) }.of_kind(CallKind::Recording));
        assert!(!Failing { since: None, last: None, call: None }.of_kind(CallKind::Recording));
    }

    fn waits_about(judged: Judged, ceiling: Duration) -> bool {
        waits_within(judged, ceiling / 2, ceiling)
    }

    #[test]
    fn a_first_failure_counts_and_starts_a_run() {
        let first = Failing::of(&Message::sample());
        assert_eq!(first, Failing { since: None, last: None, call: None });
        assert_eq!(
            first.judge(CallKind::Conversation, |_| false, &policy(), NOW),
            Judged { verdict: Verdict::Counts, since: NOW, call: CallKind::Conversation }
        );
    }

    #[test]
    fn a_failure_after_an_answer_to_another_call_counts_and_the_run_goes_on() {
        let answered_at = NOW - 1_000;
        let answered_since = |at| answered_at >= at;
        let after = failing(NOW - 60_000, NOW - 2_000).judge(CallKind::Conversation, answered_since, &policy(), NOW);
        assert_eq!(
            after,
            Judged { verdict: Verdict::Counts, since: NOW - 60_000, call: CallKind::Conversation },
            "its own call fails; the run goes on"
        );
        let before = failing(NOW - 60_000, NOW - 500).judge(CallKind::Conversation, answered_since, &policy(), NOW);
        assert!(waits_about(before, Duration::from_secs(60)), "answered before it: the API is down since, {before:?}");
        assert_eq!(before.since, NOW - 60_000);
    }

    #[test]
    fn an_outage_is_waited_out_as_long_as_it_has_lasted_between_the_delays() {
        let p = policy();
        let down = |since: u64| failing(NOW - since, NOW - 100).judge(CallKind::Conversation, |_| false, &p, NOW);
        assert!(waits_about(down(500), Duration::from_secs(2)), "at least the base delay");
        assert!(waits_about(down(30_000), Duration::from_secs(30)));
        assert!(waits_about(down(3_600_000), Duration::from_secs(600)), "at most the longest delay");
        assert!(waits_about(down(RIDE_OUT.as_millis() as u64 - 1), Duration::from_secs(600)));
    }

    #[test]
    fn after_a_day_of_failing_every_failure_counts_until_the_api_answers() {
        let since = NOW - RIDE_OUT.as_millis() as u64;
        let overdue = failing(since, NOW - 100).judge(CallKind::Conversation, |_| false, &policy(), NOW);
        assert_eq!(
            overdue,
            Judged { verdict: Verdict::Counts, since, call: CallKind::Conversation },
            "the run goes on"
        );
        let next = Failing::of(&overdue.stamped(&Message::sample(), NOW)).judge(
            CallKind::Conversation,
            |_| false,
            &policy(),
            NOW + 5_000,
        );
        assert_eq!(next.verdict, Verdict::Counts, "and the next failure counts too");
    }

    #[test]
    fn a_day_is_counted_from_the_first_failure_of_a_run_whatever_was_answered_between() {
        let since = NOW - RIDE_OUT.as_millis() as u64;
        let answered = failing(since, NOW - 60_000).judge(CallKind::Conversation, |_| true, &policy(), NOW);
        let stamped = answered.stamped(&Message::sample(), NOW);
        let next = Failing::of(&stamped).judge(CallKind::Conversation, |_| false, &policy(), NOW + 5_000);
        assert_eq!(next.verdict, Verdict::Counts, "a day after its first failure, with an answer between");
        let mut over = stamped.clone();
        run_over(&mut over, Some(CallKind::Recording));
        assert_eq!(Failing::of(&over), Failing::of(&stamped), "an answer to another kind of call ends no run");
        run_over(&mut over, Some(CallKind::Conversation));
        assert_eq!(
            Failing::of(&over).judge(CallKind::Conversation, |_| false, &policy(), NOW + 5_000).since,
            NOW + 5_000,
            "a new run"
        );
    }

    #[test]
    fn a_recording_failing_after_its_conversation_failed_starts_a_run_of_its_own() {
        let conversations_down = failing(NOW - 3_600_000, NOW - 60_000);
        let recording = conversations_down.judge(CallKind::Recording, |_| false, &policy(), NOW);
        assert_eq!(recording, Judged { verdict: Verdict::Counts, since: NOW, call: CallKind::Recording });
        let stamped = recording.stamped(&Message::sample(), NOW);
        assert_eq!(stamped.header(headers::FAILING_CALL), Some("recording"));
        let again = Failing::of(&stamped).judge(CallKind::Recording, |_| false, &policy(), NOW + 2_000);
        assert!(waits_about(again, Duration::from_secs(2)), "then waits as its own run: {again:?}");
    }

    #[test]
    fn waits_are_a_second_at_least_at_their_longest_whatever_the_settings() {
        let zero = RetryPolicy { max_attempts: 8, base_delay: Duration::ZERO, max_delay: Duration::ZERO };
        let long = failing(NOW - 60_000, NOW - 100).judge(CallKind::Conversation, |_| false, &zero, NOW);
        assert!(waits_about(long, Duration::from_secs(1)), "{long:?}");
        let early = failing(NOW - 40, NOW - 10).judge(CallKind::Conversation, |_| false, &zero, NOW);
        assert!(waits_within(early, Duration::from_millis(20), Duration::from_millis(40)), "growing: {early:?}");
    }

    #[test]
    fn times_ahead_of_the_clock_are_taken_for_now() {
        let ahead = failing(NOW + 3_600_000, NOW + 3_600_000);
        assert_eq!(
            ahead.judge(CallKind::Conversation, |at| at <= NOW, &policy(), NOW).verdict,
            Verdict::Counts,
            "answered now counts"
        );
        let down = ahead.judge(CallKind::Conversation, |_| false, &policy(), NOW);
        assert!(waits_about(down, Duration::from_secs(2)), "{down:?}");
        let stamped = down.stamped(&Message::sample(), NOW);
        assert_eq!(stamped.header(headers::FAILING_SINCE), Some(NOW.to_string().as_str()));
        assert_eq!(stamped.header(headers::FAILED_AT), Some(NOW.to_string().as_str()));
    }

    #[test]
    fn answers_are_kept_apart_by_kind_and_only_answers_count() {
        let answered = Answered::default();
        let unanswered: Result<(), ApiError> = Err(ApiError::Server { status: 503, detail: String::new() });
        answered.note(CallKind::Conversation, &unanswered, NOW);
        answered.note::<()>(CallKind::Conversation, &Err(ApiError::Transport("timed out".into())), NOW);
        assert!(!answered.since(CallKind::Conversation, 0), "a 5xx and a timeout are no answers");
        answered.note::<()>(CallKind::Conversation, &Err(ApiError::NotFound { detail: String::new() }), NOW);
        assert!(answered.since(CallKind::Conversation, NOW), "a 404 is the API at work, and at the same ms counts");
        assert!(!answered.since(CallKind::Conversation, NOW + 1));
        assert!(!answered.since(CallKind::Recording, 0), "a conversation's answer says nothing of recordings");
        answered.note(CallKind::Recording, &Ok(()), NOW + 5);
        assert!(answered.since(CallKind::Recording, NOW + 5));
    }
}
