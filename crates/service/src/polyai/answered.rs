//! When the API last answered one of a project's calls as a working service: anything but a 5xx,
//! a 408 or no answer at all. A 404, a 429 or a refused key is the API at work.
//!
//! The worker asks it after a call failed with no such answer: if the API answered other calls
//! since the event's previous failure, the event's own call is failing (the failure counts
//! towards `RELAY_MAX_ATTEMPTS`); if it answered none, the API is down and the event waits it out
//! (see `worker::outage`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::ApiError;
use crate::wall_clock::unix_millis;

/// Unix milliseconds of the latest answer; 0 before the first.
#[derive(Debug, Default)]
pub struct LastAnswered(AtomicU64);

impl LastAnswered {
    /// Notes how a call went.
    pub fn note<T>(&self, result: &Result<T, ApiError>) {
        let answered = match result {
            Ok(_) => true,
            Err(error) => !error.is_unanswered(),
        };
        if answered {
            self.0.fetch_max(unix_millis(), Ordering::Relaxed);
        }
    }

    /// Whether a call was answered at or after `unix_ms`. At, too: a call answered within the
    /// millisecond of a failure that was judged before it counts, so a failure is never taken
    /// for an outage for want of a clock's resolution.
    pub fn since(&self, unix_ms: u64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        last != 0 && last >= unix_ms
    }
}

impl ApiError {
    /// The API gave no answer of its own: a 5xx or 408 (a gateway's, most often, or a server
    /// failing), a timeout, or no connection.
    pub fn is_unanswered(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Transport(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_of_the_api_at_work_is_noted() {
        let last = LastAnswered::default();
        assert!(!last.since(0), "nothing answered yet");
        last.note::<()>(&Err(ApiError::Server { status: 503, detail: String::new() }));
        last.note::<()>(&Err(ApiError::Transport("timed out".into())));
        assert!(!last.since(0), "a 5xx and a timeout are no answers");
        let before = unix_millis();
        last.note::<()>(&Err(ApiError::NotFound { detail: String::new() }));
        assert!(last.since(before), "a 404 is the API at work");
        assert!(!last.since(unix_millis() + 1_000));
        last.note(&Ok(()));
        assert!(last.since(before));
    }
}
