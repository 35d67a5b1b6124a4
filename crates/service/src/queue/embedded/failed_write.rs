//! Readiness after a failed write to local storage: the embedded queue's and the spool's.
//!
//! Off until a write works or a while has passed, whichever comes first. Waiting for a write
//! alone would not do: unready, a relay gets no webhooks to write (its load balancer sends none)
//! and, on the embedded queue, its worker takes no events, so nothing might write again and it
//! would stay out however soon the disk was mended. After the wait the next write tries the disk
//! again; if it fails too, readiness is off for another wait.

use std::{
    sync::{Mutex, Weak},
    time::Duration,
};

use tokio::time::Instant;

/// How long a failed write keeps readiness off, unless a write works meanwhile.
pub const UNREADY_AFTER_FAILED_WRITE: Duration = Duration::from_secs(30);

/// When a write last failed, unless one worked since.
#[derive(Debug, Default)]
pub struct FailedWrite(Mutex<Option<Instant>>);

impl FailedWrite {
    /// Notes how a write went.
    pub fn note(&self, worked: bool) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = (!worked).then(Instant::now);
    }

    /// Whether writes may be taken: none failed in the last [`UNREADY_AFTER_FAILED_WRITE`], or
    /// one worked since.
    pub fn allows(&self) -> bool {
        let failed = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        failed.is_none_or(|at| at.elapsed() >= UNREADY_AFTER_FAILED_WRITE)
    }
}

/// After a failed write: once its wait is over, `tell` the watchers of `owner`'s readiness,
/// unless `owner` is gone by then (it is not kept open for this).
pub fn tell_when_over<T: Send + Sync + 'static>(owner: Weak<T>, tell: impl FnOnce(&T) + Send + 'static) {
    // From now, not from when the task first runs.
    let over = Instant::now() + UNREADY_AFTER_FAILED_WRITE;
    tokio::spawn(async move {
        tokio::time::sleep_until(over).await;
        if let Some(owner) = owner.upgrade() {
            tell(&owner);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_stops_writes_for_the_wait_or_until_one_works() {
        let failed = FailedWrite::default();
        assert!(failed.allows());
        failed.note(false);
        tokio::time::advance(UNREADY_AFTER_FAILED_WRITE - Duration::from_millis(1)).await;
        assert!(!failed.allows());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(failed.allows(), "tried again after the wait");
        failed.note(false);
        failed.note(true);
        assert!(failed.allows(), "a write worked since");
    }
}
