//! Reading a webhook's body: at most `RELAY_MAX_BODY`, within `RELAY_REQUEST_TIMEOUT`, and within
//! the memory that all bodies being read may hold together (`RELAY_BODY_MEMORY`, design §10).
//!
//! A body's signature can be checked only once the whole body is in, so until then anyone can
//! make the relay hold bytes: a thousand connections each sending a megabyte and stalling would
//! hold a gigabyte. Every body may hold its first [`FREE_BYTES`] without asking, which covers
//! PolyAI's events (a few KB); what a body holds beyond that comes out of one budget shared by
//! all requests, taken as the bytes arrive, never for a length only declared: otherwise a few
//! dozen heads declaring a megabyte each, and no body, would spend the budget for nothing. A body
//! that finds the budget spent is answered 503 at once, and retried by PolyAI. So clients
//! without the secret can spend the budget, but never the room an ordinary event needs, and
//! bodies being read hold at most `RELAY_MAX_CONNECTIONS × FREE_BYTES + RELAY_BODY_MEMORY`.
//! A body gives its share back once it is read: a signed one goes on under
//! `RELAY_MAX_IN_FLIGHT`, an unsigned one is dropped.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{meters::WebhookMeters, rejection::Rejection};
use crate::telemetry::Metrics;

/// What every body may hold without taking from the shared budget.
pub const FREE_BYTES: usize = 16 << 10;

/// The memory bodies being read may hold beyond their first [`FREE_BYTES`], all together.
pub struct BodyMemory {
    /// One permit a byte.
    bytes: Semaphore,
}

impl BodyMemory {
    pub fn new(bytes: usize) -> Self {
        Self { bytes: Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)) }
    }

    /// What is left of the budget now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// The budget was spent when this body needed more of it.
#[derive(Debug, thiserror::Error)]
#[error("the memory for request bodies is spent")]
struct Spent;

/// Counts a request in [`crate::telemetry::names::BODIES_READING`] for as long as it lives
/// (dropped on any exit).
pub struct ReadingBody(metrics::Gauge);

impl ReadingBody {
    pub fn start(meter: &Metrics, meters: &WebhookMeters) -> Self {
        // A handle of this relay's recorder, so the decrement on drop lands there too, whichever
        // recorder is current where the request ends.
        let gauge = meters.bodies_reading(meter);
        meter.record(|| gauge.increment(1.0));
        Self(gauge)
    }
}

impl Drop for ReadingBody {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Reads at most `limit` bytes within `timeout`, taking from `memory` what the body holds beyond
/// [`FREE_BYTES`]; never buffers more than the limit. The body is counted as `reading` until
/// this returns.
pub async fn read(
    _reading: ReadingBody,
    memory: &BodyMemory,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Rejection> {
    // A declared length over the limit is refused before a byte of the body is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(Rejection::TooLarge);
    }
    let body = Limited::new(Budgeted::new(body, memory), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(Rejection::SlowBody),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if caused_by::<LengthLimitError>(error.as_ref()) => Err(Rejection::TooLarge),
        Ok(Err(error)) if caused_by::<Spent>(error.as_ref()) => Err(Rejection::BodyMemoryFull),
        Ok(Err(error)) => Err(Rejection::UnreadableBody(error.to_string())),
    }
}

/// Whether `error`, or an error it wraps, is a `T`.
fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(inner) = source {
        if inner.is::<T>() {
            return true;
        }
        source = inner.source();
    }
    false
}

/// A body that takes its bytes beyond [`FREE_BYTES`] from the budget before handing them on,
/// and gives them back when dropped.
struct Budgeted<'a> {
    inner: Body,
    memory: &'a BodyMemory,
    /// Bytes taken from the budget so far, as permits.
    taken: Option<SemaphorePermit<'a>>,
    /// Bytes received so far.
    received: usize,
}

impl<'a> Budgeted<'a> {
    fn new(inner: Body, memory: &'a BodyMemory) -> Self {
        Self { inner, memory, taken: None, received: 0 }
    }

    /// Makes sure the budget covers a body of `size` bytes.
    fn cover(&mut self, size: usize) -> Result<(), Spent> {
        let needed = size.saturating_sub(FREE_BYTES);
        let held = self.taken.as_ref().map_or(0, SemaphorePermit::num_permits);
        if needed <= held {
            return Ok(());
        }
        let more = u32::try_from(needed - held).map_err(|_| Spent)?;
        let permit = self.memory.bytes.try_acquire_many(more).map_err(|_| Spent)?;
        match &mut self.taken {
            Some(taken) => taken.merge(permit),
            None => self.taken = Some(permit),
        }
        Ok(())
    }
}

impl http_body::Body for Budgeted<'_> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let received = self.received.saturating_add(data.remaining());
                self.received = received;
                self.cover(received)?;
            }
        }
        Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;
    use http_body::Body as _;
    use http_body_util::StreamBody;

    use super::*;

    /// A body of `chunks` sent as they come, with no declared length.
    fn chunked(chunks: Vec<usize>) -> Body {
        let frames = chunks.into_iter().map(|n| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; n]))));
        Body::new(StreamBody::new(stream::iter(frames)))
    }

    async fn collect(body: Budgeted<'_>) -> Result<Bytes, String> {
        body.collect().await.map(|c| c.to_bytes()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_body_within_its_free_bytes_takes_nothing_from_the_budget() {
        let memory = BodyMemory::new(0);
        let body = collect(Budgeted::new(chunked(vec![FREE_BYTES / 2, FREE_BYTES / 2]), &memory)).await;
        assert_eq!(body.unwrap().len(), FREE_BYTES);
    }

    #[tokio::test]
    async fn a_body_takes_what_it_holds_beyond_its_free_bytes_and_gives_it_back_when_read() {
        let memory = BodyMemory::new(100 << 10);
        let mut body = Budgeted::new(chunked(vec![FREE_BYTES, 30 << 10, 30 << 10]), &memory);
        let mut context = Context::from_waker(std::task::Waker::noop());
        for expected_available in [100 << 10, 70 << 10, 40 << 10] {
            let frame = Pin::new(&mut body).poll_frame(&mut context);
            assert!(matches!(frame, Poll::Ready(Some(Ok(_)))));
            assert_eq!(memory.available(), expected_available);
        }
        drop(body);
        assert_eq!(memory.available(), 100 << 10, "given back");
    }

    #[tokio::test]
    async fn a_body_that_finds_the_budget_spent_is_refused_and_takes_nothing_more() {
        let memory = BodyMemory::new(50 << 10);
        let mut holder = Budgeted::new(chunked(vec![FREE_BYTES + (40 << 10)]), &memory);
        let mut context = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(Pin::new(&mut holder).poll_frame(&mut context), Poll::Ready(Some(Ok(_)))));
        assert_eq!(memory.available(), 10 << 10);

        let refused = collect(Budgeted::new(chunked(vec![FREE_BYTES, 20 << 10]), &memory)).await;
        assert_eq!(refused.unwrap_err(), Spent.to_string());
        assert_eq!(memory.available(), 10 << 10, "what the refused body took is given back");
        // An ordinary event still fits: the budget is only for what lies beyond the free bytes.
        assert!(collect(Budgeted::new(chunked(vec![2 << 10]), &memory)).await.is_ok());
    }

    #[tokio::test]
    async fn a_declared_length_takes_nothing_from_the_budget_until_its_bytes_arrive() {
        /// Declares a length and never sends a byte.
        struct Declared(u64);
        impl http_body::Body for Declared {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                Poll::Pending
            }
            fn size_hint(&self) -> SizeHint {
                SizeHint::with_exact(self.0)
            }
        }
        let memory = BodyMemory::new(10 << 10);
        let mut body = Budgeted::new(Body::new(Declared(1 << 20)), &memory);
        let mut context = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut context).is_pending());
        assert_eq!(memory.available(), 10 << 10, "a head alone spends nothing");
    }
}
