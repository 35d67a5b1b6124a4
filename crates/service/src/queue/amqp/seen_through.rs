//! A publish whose caller stops waiting (the receiver's ack deadline, the spool's batch budget)
//! is still seen through to the broker's answer.
//!
//! lapin keeps every publish confirm dropped before the broker answered in a list of its
//! channel's that only `Channel::wait_for_confirms` or the channel's failure empties. The relay
//! never calls the former: each publish given up at a deadline while the broker stays connected
//! but slow to confirm (a quorum queue waiting for its majority, a disk under pressure) would stay
//! in memory for as long as the connection lives, and such a slowdown can last hours. Dropped
//! before it finished, a publish here goes on in a task of its own until the broker answers (or
//! the channel fails), is counted in [`names::LATE_CONFIRMS`], and is let go.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use crate::{
    queue::{Destination, PublishError},
    telemetry::{names, Metrics},
};

type Publish = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

/// A publish that finishes even if this future is dropped first.
pub struct SeenThrough {
    /// `None` once it has finished here.
    publish: Option<Publish>,
    /// For the count of late answers, by destination and result.
    destination: Destination,
    metrics: Metrics,
}

impl SeenThrough {
    pub fn new(
        publish: impl Future<Output = Result<(), PublishError>> + Send + 'static,
        destination: Destination,
        metrics: Metrics,
    ) -> Self {
        Self { publish: Some(Box::pin(publish)), destination, metrics }
    }
}

impl Future for SeenThrough {
    type Output = Result<(), PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(publish) = self.publish.as_mut() else {
            return Poll::Ready(Err(PublishError::Failed("polled after it finished".into())));
        };
        let result = publish.as_mut().poll(cx);
        if result.is_ready() {
            self.publish = None;
        }
        result
    }
}

impl Drop for SeenThrough {
    fn drop(&mut self) {
        let Some(publish) = self.publish.take() else { return };
        // Outside a runtime (the process is ending) there is nothing left to keep memory for.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (destination, metrics) = (self.destination.label(), self.metrics.clone());
        runtime.spawn(async move {
            let result = match publish.await {
                Ok(()) => "ack",
                Err(error) => error.label(),
            };
            // An ack here is a copy the caller also spooled or had retried: a duplicate, never a loss.
            tracing::debug!(destination, result, "the broker answered a publish after its deadline");
            metrics.record(|| {
                metrics::counter!(names::LATE_CONFIRMS, "destination" => destination, "result" => result).increment(1)
            });
        });
    }
}
