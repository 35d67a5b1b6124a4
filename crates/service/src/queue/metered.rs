//! A [`Publisher`] that counts every confirm, so the receiver, the worker and backfill record
//! `relay_publish_confirms_total` the same way, in one place.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Destination, Message, PublishError, Publisher};
use crate::telemetry::{names, Metrics};

/// Wraps a backend's publisher and records the result of each publish by destination.
pub struct Metered {
    inner: Arc<dyn Publisher>,
    metrics: Metrics,
}

impl Metered {
    pub fn new(inner: Arc<dyn Publisher>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }
}

/// Records one result, or `timeout` when the publish is dropped before it has one: the caller
/// stopped waiting for the confirm (the receiver's ack deadline).
struct Pending<'a> {
    metrics: &'a Metrics,
    destination: &'static str,
    result: Option<&'static str>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let (destination, result) = (self.destination, self.result.unwrap_or("timeout"));
        self.metrics.record(|| {
            metrics::counter!(names::CONFIRMS, "destination" => destination, "result" => result).increment(1)
        });
    }
}

#[async_trait]
impl Publisher for Metered {
    async fn publish(&self, to: Destination, message: Message) -> Result<(), PublishError> {
        let mut pending = Pending { metrics: &self.metrics, destination: to.label(), result: None };
        let result = self.inner.publish(to, message).await;
        pending.result = Some(match &result {
            Ok(()) => "ack",
            Err(error) => error.label(),
        });
        result
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.readiness()
    }
}
