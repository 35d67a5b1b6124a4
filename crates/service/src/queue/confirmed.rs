//! Publishing through short broker outages: the one retry loop of the worker and backfill.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Destination, Message, PublishError, Publisher};
use crate::backoff::Backoff;

/// Waits between attempts: 100 ms doubling to 5 s.
const BETWEEN_ATTEMPTS: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Publishes `message` until the queue confirms it. Gives up, with the last error, once the
/// next attempt would start after `patience`, or at `shutdown`: the caller then keeps the
/// message elsewhere (back in its queue, or a checkpoint to resume from) rather than hold it.
/// A permanent error (a message over the broker's limit) is returned at once: waiting changes
/// nothing, and the caller has to do something else with the message.
pub async fn publish_until_confirmed(
    publisher: &dyn Publisher,
    to: Destination,
    message: &Message,
    patience: Duration,
    shutdown: &CancellationToken,
) -> Result<(), PublishError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut failures = 0;
    loop {
        let error = match publisher.publish(to, message.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_permanent() => return Err(error),
            Err(error) => error,
        };
        tracing::warn!(%error, destination = to.label(), "publish failed");
        failures += 1;
        let wait = BETWEEN_ATTEMPTS.delay(failures);
        if tokio::time::Instant::now() + wait > deadline {
            return Err(error);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(error),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// Refuses the first `failures` publishes.
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Publisher for Flaky {
        async fn publish(&self, _: Destination, _: Message) -> Result<(), PublishError> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            if call < self.failures {
                Err(PublishError::Unavailable)
            } else {
                Ok(())
            }
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_is_retried_until_confirmed() {
        let flaky = Flaky { failures: 3, calls: AtomicU32::new(0) };
        let never = CancellationToken::new();
        let message = Message::sample();
        let sent = publish_until_confirmed(&flaky, Destination::Events, &message, Duration::from_secs(30), &never);
        assert!(sent.await.is_ok());
        assert_eq!(flaky.calls.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_patience_the_last_error_is_returned() {
        let flaky = Flaky { failures: u32::MAX, calls: AtomicU32::new(0) };
        let never = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let message = Message::sample();
        let sent = publish_until_confirmed(&flaky, Destination::Events, &message, Duration::from_secs(30), &never);
        assert!(matches!(sent.await, Err(PublishError::Unavailable)));
        assert!(started.elapsed() <= Duration::from_secs(30), "{:?}", started.elapsed());
        assert!(flaky.calls.load(Ordering::Relaxed) > 3);
    }

    /// Refuses every message as over the broker's limit.
    struct TooLarge {
        calls: AtomicU32,
    }

    #[async_trait]
    impl Publisher for TooLarge {
        async fn publish(&self, _: Destination, message: Message) -> Result<(), PublishError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Err(PublishError::TooLarge { size: message.body.len(), limit: 1 })
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_over_the_broker_limit_is_refused_at_once_not_retried() {
        let publisher = TooLarge { calls: AtomicU32::new(0) };
        let never = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let message = Message::sample();
        let sent =
            publish_until_confirmed(&publisher, Destination::Conversations, &message, Duration::from_secs(30), &never);
        assert!(matches!(sent.await, Err(PublishError::TooLarge { size: 2, limit: 1 })));
        assert_eq!(publisher.calls.load(Ordering::Relaxed), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_stops_the_retries() {
        let flaky = Flaky { failures: u32::MAX, calls: AtomicU32::new(0) };
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let message = Message::sample();
        let sent = publish_until_confirmed(&flaky, Destination::Events, &message, Duration::from_secs(30), &shutdown);
        assert!(sent.await.is_err());
        assert_eq!(flaky.calls.load(Ordering::Relaxed), 1);
    }
}
