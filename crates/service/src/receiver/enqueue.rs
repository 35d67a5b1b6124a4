//! Getting a verified event durably stored within `RELAY_ACK_DEADLINE`: the broker's confirm,
//! or, with a spool, the spool's fsync when the broker is away, blocked or slow.

use std::time::{Duration, Instant};

use super::{rejection::Rejection, withdraw::Withdrawal, Receiver};
use crate::{
    queue::{Destination, Message, PublishError},
    spool::{Spool, SpoolError},
};

/// Where the event was stored.
pub enum Stored {
    Broker,
    Spooled,
}

/// The part of the deadline kept back for the spool's write: a third, at most a second. The
/// broker's attempt gives up that much early, so a fsync still fits before the deadline.
fn spool_reserve(deadline: Duration) -> Duration {
    (deadline / 3).min(Duration::from_secs(1))
}

pub async fn enqueue(receiver: &Receiver, message: Message, started: Instant) -> Result<Stored, Rejection> {
    let withdrawal = receiver.publisher.keeps_refused_copies().then(|| Withdrawal::of(&message)).flatten();
    let mut nacked = false;
    let stored = store(receiver, message, started, &mut nacked).await;
    // Answered 503, refused by the broker, where the conversations log may hold a copy (design
    // §9: only accepted events make a call known).
    if let (true, Err(_), Some(withdrawal)) = (nacked, &stored, withdrawal) {
        withdrawal.send(receiver.publisher.clone(), &receiver.withdrawals);
    }
    stored
}

/// The broker, or the spool; `nacked`: the broker refused the event within the deadline. The
/// conversations log is bound beside the worker's queue, so it may hold a copy of an event the
/// broker refused (the worker's queue did). A connection lost or a publish never sent leaves
/// none to speak of, and a return means no queue took it. One answered after the deadline is
/// left to the publisher, which records the answer: taken late, it is the worker's.
async fn store(
    receiver: &Receiver,
    message: Message,
    started: Instant,
    nacked: &mut bool,
) -> Result<Stored, Rejection> {
    let deadline = receiver.settings.ack_deadline;
    let Some(spool) = &receiver.spool else {
        let remaining = deadline.saturating_sub(started.elapsed());
        let published = publish(receiver, message, remaining).await;
        *nacked = matches!(published, Err(Rejection::Unavailable(PublishError::Nacked)));
        return published.map(|()| Stored::Broker);
    };
    let budget = deadline.saturating_sub(started.elapsed()).saturating_sub(spool_reserve(deadline));
    let published = publish(receiver, message.clone(), budget).await;
    *nacked = matches!(published, Err(Rejection::Unavailable(PublishError::Nacked)));
    match published {
        Ok(()) => Ok(Stored::Broker),
        // No queue is bound for the type, or the body is over the broker's limit (start-up refuses
        // a RELAY_MAX_BODY that allows it): configuration problems the spool would not outlast, so
        // the sender hears of them as before, and retries once they are fixed.
        Err(rejection @ Rejection::Unavailable(PublishError::Unroutable(_) | PublishError::TooLarge { .. })) => {
            Err(rejection)
        }
        Err(rejection) => {
            tracing::debug!(error = %rejection, "the broker did not take the event in time; spooling it");
            spool_within(spool, message, deadline.saturating_sub(started.elapsed())).await
        }
    }
}

/// Publishes with the broker's confirm within `budget`. A publish that times out may still be
/// confirmed later: if the event is also spooled, or the sender retries, that is a duplicate with
/// the same message id, never a loss.
async fn publish(receiver: &Receiver, message: Message, budget: Duration) -> Result<(), Rejection> {
    let publish = receiver.publisher.publish(Destination::Events, message);
    // The publisher records the confirm (or, dropped at the deadline, the timeout).
    match tokio::time::timeout(budget, publish).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Rejection::Unavailable(error)),
        Err(_) => Err(Rejection::DeadlineExceeded),
    }
}

/// Commits to the spool within `remaining`. A write that finishes after the 503 leaves a copy
/// the drainer forwards: again a duplicate of the sender's retry, not a loss.
async fn spool_within(spool: &Spool, message: Message, remaining: Duration) -> Result<Stored, Rejection> {
    match tokio::time::timeout(remaining, spool.put(message)).await {
        Ok(Ok(())) => Ok(Stored::Spooled),
        Ok(Err(SpoolError::Full { .. })) => Err(Rejection::SpoolFull),
        Ok(Err(SpoolError::Storage(error))) => Err(Rejection::SpoolFailed(error)),
        Err(_) => Err(Rejection::DeadlineExceeded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_keeps_a_third_of_the_deadline_and_at_most_a_second() {
        assert_eq!(spool_reserve(Duration::from_millis(600)), Duration::from_millis(200));
        assert_eq!(spool_reserve(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(spool_reserve(Duration::from_secs(30)), Duration::from_secs(1));
    }
}
