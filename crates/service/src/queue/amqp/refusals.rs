//! Channels the broker keeps refusing: when a session's channels are replaced by new ones.
//!
//! RabbitMQ keeps a quorum queue's refusal in each channel that publishes to it. A queue at its
//! length limit (set by policy; every queue of the relay is declared `x-overflow=reject-publish`)
//! tells those channels to nack whatever they publish to it, and to go on only once it has
//! drained below the limit. On 3.10 a limit lifted while nothing drains the queue (the policy
//! cleared with the worker down) never tells them: they nack every publish to that queue until
//! they close, while a new channel publishes at once. So once every answer a channel had for a
//! destination has been a nack for [`REOPEN_AFTER`], its session is replaced: the webhooks it
//! refused are taken again. While the queue really is full, that is a new connection every
//! [`REOPEN_AFTER`], its first publish nacked like the last one.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

use crate::queue::{Destination, PublishError};

/// How long a channel's publishes to one destination are all refused before its session is
/// replaced: a queue full for longer costs a reconnect this often.
pub const REOPEN_AFTER: Duration = Duration::from_secs(10);

/// Since when each channel's answers for each destination have all been nacks.
pub struct Refusals {
    start: Instant,
    /// Milliseconds after `start` (at least 1) of the first nack since the last ack, by channel
    /// and destination; 0 while not refused.
    since: Vec<[AtomicU64; Destination::COUNT]>,
}

impl Refusals {
    pub fn new(channels: usize) -> Self {
        Self { start: Instant::now(), since: (0..channels).map(|_| Default::default()).collect() }
    }

    /// Notes the broker's answer to a publish to `to` on channel `channel`. Only acks and nacks
    /// tell: a timeout or a failed channel says nothing of the queue.
    pub fn note(&self, channel: usize, to: Destination, answer: &Result<(), PublishError>) {
        let Some(slot) = self.since.get(channel).map(|by_destination| &by_destination[to.index()]) else { return };
        match answer {
            Ok(()) => slot.store(0, Ordering::Relaxed),
            Err(PublishError::Nacked) => {
                let now = (self.start.elapsed().as_millis() as u64).max(1);
                let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    /// Whether some channel has had only nacks for some destination for at least `long`.
    pub fn refused_for(&self, long: Duration) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let long = long.as_millis() as u64;
        self.since.iter().flatten().any(|slot| {
            let since = slot.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since) >= long
        })
    }

    /// Starts every count over: a replacement that failed is tried again only after as long.
    pub fn forget(&self) {
        self.since.iter().flatten().for_each(|slot| slot.store(0, Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: Destination = Destination::Events;

    #[tokio::test(start_paused = true)]
    async fn a_channel_refused_for_long_enough_is_told_and_an_ack_starts_it_over() {
        let refusals = Refusals::new(2);
        tokio::time::advance(Duration::from_millis(1)).await;
        refusals.note(1, EVENTS, &Err(PublishError::Nacked));
        tokio::time::advance(Duration::from_secs(5)).await;
        refusals.note(1, EVENTS, &Err(PublishError::Nacked));
        // Another channel's acks, another destination's acks: this one is still refused.
        refusals.note(0, EVENTS, &Ok(()));
        refusals.note(1, Destination::Withdrawn, &Ok(()));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!refusals.refused_for(REOPEN_AFTER), "counted from the first nack: 9 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(refusals.refused_for(REOPEN_AFTER));

        refusals.note(1, EVENTS, &Ok(()));
        assert!(!refusals.refused_for(REOPEN_AFTER), "an ack: the queue takes it again");
        refusals.note(1, EVENTS, &Err(PublishError::Nacked));
        refusals.note(1, EVENTS, &Err(PublishError::Timeout));
        tokio::time::advance(REOPEN_AFTER).await;
        assert!(refusals.refused_for(REOPEN_AFTER), "a timeout tells nothing");
        refusals.forget();
        assert!(!refusals.refused_for(Duration::ZERO));
    }
}
