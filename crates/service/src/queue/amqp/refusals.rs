//! Channels the broker keeps refusing: when a session's channels are replaced by new ones.
//!
//! RabbitMQ keeps a quorum queue's refusal in each channel that publishes to it. A queue at its
//! length limit (set by policy; every queue of the relay is declared `x-overflow=reject-publish`)
//! tells those channels to nack whatever they publish to it, and to go on only once it has
//! drained below the limit. On 3.10 a limit lifted while nothing drains the queue (the policy
//! cleared with the worker down) never tells them: they nack every publish to that queue until
//! they close, while a new channel publishes at once (4.0 tells them). So when a channel's answers
//! for a destination have all been nacks for a while, and still are, its session is replaced: the
//! webhooks it refused are taken again. While the queue really is full, each replacement is
//! refused too, and they come further apart ([`ReopenPace`]).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

use crate::queue::{Destination, PublishError};

/// How long a channel's publishes to one destination are all refused before its session is
/// first replaced.
pub const REOPEN_AFTER: Duration = Duration::from_secs(10);

/// The longest wait between two replacements while a queue stays full.
pub const REOPEN_AFTER_AT_MOST: Duration = Duration::from_secs(300);

/// One channel's refusals for one destination, in milliseconds after [`Refusals::start`] plus
/// one (0: none since the last ack).
#[derive(Default)]
struct Slot {
    first: AtomicU64,
    last: AtomicU64,
}

/// Since when each channel's answers for each destination have all been nacks.
pub struct Refusals {
    start: Instant,
    slots: Vec<[Slot; Destination::COUNT]>,
}

impl Refusals {
    pub fn new(channels: usize) -> Self {
        Self { start: Instant::now(), slots: (0..channels).map(|_| Default::default()).collect() }
    }

    /// Never 0, which stands for no refusal.
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Notes the broker's answer to a publish to `to` on channel `channel`. Only acks and nacks
    /// tell: a timeout or a failed channel says nothing of the queue.
    pub fn note(&self, channel: usize, to: Destination, answer: &Result<(), PublishError>) {
        let Some(slot) = self.slots.get(channel).map(|by_destination| &by_destination[to.index()]) else { return };
        match answer {
            Ok(()) => {
                slot.first.store(0, Ordering::Relaxed);
                slot.last.store(0, Ordering::Relaxed);
            }
            Err(PublishError::Nacked) => {
                let now = self.now();
                slot.last.store(now, Ordering::Relaxed);
                let _ = slot.first.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    /// Whether some channel has had only nacks for some destination for at least `long`, the
    /// last of them less than `long` ago: refused still. A single nack followed by nothing
    /// replaces nothing.
    pub fn refused_for(&self, long: Duration) -> bool {
        let (now, long) = (self.now(), long.as_millis() as u64);
        self.slots.iter().flatten().any(|slot| {
            let (first, last) = (slot.first.load(Ordering::Relaxed), slot.last.load(Ordering::Relaxed));
            first != 0 && now.saturating_sub(first) >= long && now.saturating_sub(last) < long
        })
    }

    /// Starts every count over: a replacement that failed is tried again only after as long.
    pub fn forget(&self) {
        for slot in self.slots.iter().flatten() {
            slot.first.store(0, Ordering::Relaxed);
            slot.last.store(0, Ordering::Relaxed);
        }
    }
}

/// How long refusals must last before the next replacement: doubled each time one follows the
/// last closely (the queue really is full: the new channels were refused as well), up to
/// [`REOPEN_AFTER_AT_MOST`], and back to [`REOPEN_AFTER`] once a replacement held for a while.
pub struct ReopenPace {
    after: Duration,
    last: Option<Instant>,
}

impl ReopenPace {
    pub fn new() -> Self {
        Self { after: REOPEN_AFTER, last: None }
    }

    /// The wait now: back to [`REOPEN_AFTER`] once three of the last waits passed with no
    /// replacement, whether or not another came since.
    pub fn after(&self) -> Duration {
        match self.last {
            Some(last) if last.elapsed() < self.after * 3 => self.after,
            _ => REOPEN_AFTER,
        }
    }

    /// A replacement now.
    pub fn replaced(&mut self) {
        let follows_closely = self.last.is_some_and(|last| last.elapsed() < self.after * 3);
        self.after = if follows_closely { (self.after * 2).min(REOPEN_AFTER_AT_MOST) } else { REOPEN_AFTER };
        self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: Destination = Destination::Events;
    const NACK: Result<(), PublishError> = Err(PublishError::Nacked);

    async fn wait(duration: Duration) {
        tokio::time::advance(duration).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_channel_refused_for_long_enough_and_still_is_told_and_an_ack_starts_it_over() {
        let refusals = Refusals::new(2);
        refusals.note(1, EVENTS, &NACK);
        wait(Duration::from_secs(5)).await;
        refusals.note(1, EVENTS, &NACK);
        // Another channel's acks, another destination's acks: this one is still refused.
        refusals.note(0, EVENTS, &Ok(()));
        refusals.note(1, Destination::Withdrawn, &Ok(()));
        wait(Duration::from_secs(4)).await;
        assert!(!refusals.refused_for(REOPEN_AFTER), "counted from the first nack: 9 s");
        wait(Duration::from_secs(1)).await;
        assert!(refusals.refused_for(REOPEN_AFTER));

        refusals.note(1, EVENTS, &Ok(()));
        assert!(!refusals.refused_for(REOPEN_AFTER), "an ack: the queue takes it again");
        refusals.note(1, EVENTS, &NACK);
        wait(Duration::from_secs(6)).await;
        refusals.note(1, EVENTS, &Err(PublishError::Timeout));
        refusals.note(1, EVENTS, &NACK);
        wait(Duration::from_secs(4)).await;
        assert!(refusals.refused_for(REOPEN_AFTER), "a timeout tells nothing");
        refusals.forget();
        assert!(!refusals.refused_for(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_nack_followed_by_nothing_replaces_nothing() {
        let refusals = Refusals::new(1);
        refusals.note(0, Destination::Dead, &NACK);
        for _ in 0..10 {
            wait(Duration::from_secs(3)).await;
            assert!(!refusals.refused_for(REOPEN_AFTER));
        }
        // A second one long after: refused all along, and still.
        refusals.note(0, Destination::Dead, &NACK);
        assert!(refusals.refused_for(REOPEN_AFTER));
    }

    #[tokio::test(start_paused = true)]
    async fn replacements_that_follow_each_other_come_further_apart_and_one_that_held_starts_over() {
        let mut pace = ReopenPace::new();
        let mut seen = Vec::new();
        for _ in 0..8 {
            wait(pace.after()).await;
            pace.replaced();
            seen.push(pace.after().as_secs());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
        // The queue drained: three of the last waits with no replacement, and the next refusal
        // is met at the first wait again, before any replacement says so.
        wait(REOPEN_AFTER_AT_MOST * 3 - Duration::from_secs(1)).await;
        assert_eq!(pace.after(), REOPEN_AFTER_AT_MOST);
        wait(Duration::from_secs(1)).await;
        assert_eq!(pace.after(), REOPEN_AFTER);
        pace.replaced();
        assert_eq!(pace.after(), REOPEN_AFTER);
    }
}
