//! A [`Publisher`] that counts every confirm, so the receiver, the worker and backfill record
//! `relay_publish_confirms_total` the same way, in one place.

use std::sync::Arc;

use async_trait::async_trait;
use metrics::Counter;
use tokio::sync::watch;

use super::{Destination, Message, PublishError, Publisher};
use crate::telemetry::{names, Kept, Metrics};

/// Wraps a backend's publisher and records the result of each publish by destination.
pub struct Metered {
    inner: Arc<dyn Publisher>,
    metrics: Metrics,
    /// The counter of acks, by destination (see [`Destination::index`]): the result of nearly
    /// every publish, on every webhook, so its handle is kept. Other results are looked up.
    acks: [Kept<Counter>; Destination::COUNT],
}

impl Metered {
    pub fn new(inner: Arc<dyn Publisher>, metrics: Metrics) -> Self {
        Self { inner, metrics, acks: Default::default() }
    }
}

/// Records one result, or `timeout` when the publish is dropped before it has one: the caller
/// stopped waiting for the confirm (the receiver's ack deadline).
struct Pending<'a> {
    metered: &'a Metered,
    destination: Destination,
    result: Option<&'static str>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let meter = &self.metered.metrics;
        let (destination, result) = (self.destination.label(), self.result.unwrap_or("timeout"));
        if result == "ack" {
            let acks = self.metered.acks[self.destination.index()]
                .get(meter, || metrics::counter!(names::CONFIRMS, "destination" => destination, "result" => "ack"));
            meter.record(|| acks.increment(1));
        } else {
            meter.record(|| {
                metrics::counter!(names::CONFIRMS, "destination" => destination, "result" => result).increment(1)
            });
        }
    }
}

#[async_trait]
impl Publisher for Metered {
    async fn publish(&self, to: Destination, message: Message) -> Result<(), PublishError> {
        let mut pending = Pending { metered: self, destination: to, result: None };
        let result = self.inner.publish(to, message).await;
        pending.result = Some(match &result {
            Ok(()) => "ack",
            Err(error) => error.label(),
        });
        result
    }

    fn keeps_refused_copies(&self) -> bool {
        self.inner.keeps_refused_copies()
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.readiness()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::queue::Confirms;

    #[tokio::test]
    async fn each_destination_counts_its_own_acks() {
        let metrics = Metrics::isolated();
        let metered = Metered::new(Arc::new(Confirms), metrics.clone());
        // A different number for each, so an ack counted under another destination shows.
        let sends = [
            (Destination::Events, 1),
            (Destination::Conversations, 2),
            (Destination::Retry { delay: Duration::from_secs(1) }, 3),
            (Destination::Dead, 4),
            (Destination::Withdrawn, 5),
        ];
        for (destination, count) in sends {
            for _ in 0..count {
                metered.publish(destination, Message::sample()).await.unwrap();
            }
        }
        let text = metrics.render();
        for (destination, count) in sends {
            let series =
                format!(r#"{}{{destination="{}",result="ack"}} {count}"#, names::CONFIRMS, destination.label());
            assert!(text.lines().any(|line| line == series), "{series} in:\n{text}");
        }
    }
}
