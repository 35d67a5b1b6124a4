//! Reading a webhook's body: at most `RELAY_MAX_BODY`, within `RELAY_REQUEST_TIMEOUT`, and within
//! the memory that all bodies being read may hold together (`RELAY_BODY_MEMORY`, design §10).
//!
//! A body's signature can be checked only once the whole body is in, so until then anyone can
//! make the relay hold bytes: a thousand connections each sending a megabyte and stalling would
//! hold a gigabyte. Every body may hold its first [`FREE_BYTES`] without asking, which covers
//! PolyAI's events (a few KB); what a body holds beyond that comes out of one budget shared by
//! all requests, taken as the bytes arrive, never for a length only declared: otherwise a few
//! dozen heads declaring a megabyte each, and no body, would spend the budget for nothing. So
//! bodies being read hold at most `RELAY_MAX_CONNECTIONS × FREE_BYTES + RELAY_BODY_MEMORY`.
//!
//! A body that finds the budget spent takes what the oldest bodies being read hold, cutting them
//! (they are answered 503, and a sender that has the secret retries), and is answered 503 itself
//! only when the bodies older than it do not hold enough. Refusing the newcomer instead, a client
//! without the secret that kept the budget spent with stalled bodies (32 MiB every
//! `RELAY_REQUEST_TIMEOUT`, a few MB/s) would turn away every signed event over the free bytes
//! for as long as it liked. Oldest first, a body is cut only once the bodies that started after
//! it have received nearly the whole budget: to cut a signed event that arrives at network speed,
//! a client must send that much in the moments it takes to arrive.
//!
//! A body gives its share back once it is read: a signed one goes on under `RELAY_MAX_IN_FLIGHT`,
//! an unsigned one is dropped.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{meters::WebhookMeters, rejection::Rejection};
use crate::telemetry::{names, Metrics};

/// What every body may hold without taking from the shared budget.
pub const FREE_BYTES: usize = 16 << 10;

/// The memory bodies being read may hold beyond their first [`FREE_BYTES`], all together, and
/// which bodies hold it.
pub struct BodyMemory {
    /// `RELAY_BODY_MEMORY`.
    budget: usize,
    ledger: Mutex<Ledger>,
    /// Numbers bodies in the order they start: the lower, the older.
    started: AtomicU64,
    /// `relay_webhook_body_memory_bytes`: what the bodies hold of the budget.
    held: metrics::Gauge,
}

struct Ledger {
    available: usize,
    /// The bodies holding some of the budget, by the order they started: the first is the oldest.
    holders: BTreeMap<u64, Holder>,
}

struct Holder {
    bytes: usize,
    cut: Arc<CutSignal>,
}

/// Tells a body its share was given to a younger one, and wakes it to end at once, though no
/// byte of its own comes: its sender may have stalled on purpose.
#[derive(Default)]
struct CutSignal {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl BodyMemory {
    pub fn new(budget: usize, meter: &Metrics) -> Self {
        let held = meter.record(|| metrics::gauge!(names::BODY_MEMORY));
        held.set(0.0);
        let ledger = Ledger { available: budget, holders: BTreeMap::new() };
        Self { budget, ledger: Mutex::new(ledger), started: AtomicU64::new(0), held }
    }

    /// What is left of the budget now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.ledger().available
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Nothing panics while holding it: a poisoned ledger is still consistent.
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the body that started `started` hold `needed` bytes of the budget, cutting older
    /// bodies, oldest first, when the budget is spent and they hold enough.
    fn hold(&self, started: u64, signal: &Arc<CutSignal>, needed: usize) -> Result<(), NoRoom> {
        let mut cut = Vec::new();
        let held = {
            let mut ledger = self.ledger();
            // Under the lock, where cuts are made: a body cut a moment ago takes nothing more.
            if signal.cut.load(Ordering::Acquire) {
                return Err(NoRoom::Cut);
            }
            let holds = ledger.holders.get(&started).map_or(0, |holder| holder.bytes);
            let Some(more) = needed.checked_sub(holds).filter(|&more| more > 0) else { return Ok(()) };
            let short = more.saturating_sub(ledger.available);
            if short > 0 {
                let (mut freed, mut oldest) = (0, Vec::new());
                for (&body, holder) in ledger.holders.range(..started) {
                    if freed >= short {
                        break;
                    }
                    freed += holder.bytes;
                    oldest.push(body);
                }
                if freed < short {
                    return Err(NoRoom::Spent);
                }
                for body in oldest {
                    let holder = ledger.holders.remove(&body).expect("listed under the same lock");
                    ledger.available += holder.bytes;
                    holder.cut.cut.store(true, Ordering::Release);
                    cut.push(holder.cut);
                }
            }
            ledger.available -= more;
            let holder = ledger.holders.entry(started).or_insert_with(|| Holder { bytes: 0, cut: signal.clone() });
            holder.bytes += more;
            self.budget - ledger.available
        };
        self.held.set(held as f64);
        for signal in cut {
            signal.waker.wake();
        }
        Ok(())
    }

    /// Gives back what the body that started `started` holds, unless it was cut (its share is
    /// another's now).
    fn release(&self, started: u64) {
        let held = {
            let mut ledger = self.ledger();
            let Some(holder) = ledger.holders.remove(&started) else { return };
            ledger.available += holder.bytes;
            self.budget - ledger.available
        };
        self.held.set(held as f64);
    }
}

/// Why a body could not hold what it received.
#[derive(Debug, thiserror::Error)]
enum NoRoom {
    #[error("the memory for request bodies is spent")]
    Spent,
    #[error("the memory this body held was needed by bodies that started after it")]
    Cut,
}

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
        Ok(Err(error)) if caused_by::<NoRoom>(error.as_ref()) => Err(Rejection::BodyMemoryFull),
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
    /// Its place in the order bodies started.
    started: u64,
    /// Set once it holds some of the budget (PolyAI's events never do): how it learns it was cut.
    cut: Option<Arc<CutSignal>>,
    /// Bytes received so far.
    received: usize,
}

impl<'a> Budgeted<'a> {
    fn new(inner: Body, memory: &'a BodyMemory) -> Self {
        let started = memory.started.fetch_add(1, Ordering::Relaxed);
        Self { inner, memory, started, cut: None, received: 0 }
    }

    /// Makes sure the budget covers a body of `size` bytes.
    fn cover(&mut self, size: usize) -> Result<(), NoRoom> {
        let needed = size.saturating_sub(FREE_BYTES);
        if needed == 0 {
            return Ok(());
        }
        let signal = self.cut.get_or_insert_with(Default::default).clone();
        self.memory.hold(self.started, &signal, needed)
    }
}

impl http_body::Body for Budgeted<'_> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(signal) = &self.cut {
            // Registered before the look, so a cut after it wakes this task.
            signal.waker.register(cx.waker());
            if signal.cut.load(Ordering::Acquire) {
                return Poll::Ready(Some(Err(NoRoom::Cut.into())));
            }
        }
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

impl Drop for Budgeted<'_> {
    fn drop(&mut self) {
        if self.cut.is_some() {
            self.memory.release(self.started);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{stream, StreamExt};
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

    fn budget(bytes: usize) -> BodyMemory {
        BodyMemory::new(bytes, &Metrics::isolated())
    }

    /// A body that sends `sent` bytes and stalls, as a client without the secret might.
    fn stalled(sent: usize) -> Body {
        let first = stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; sent])))]);
        Body::new(StreamBody::new(first.chain(stream::pending())))
    }

    /// Polls `body` once; whether it handed on a frame, ended with an error, or waits.
    fn poll_once(body: &mut Budgeted<'_>, waker: &std::task::Waker) -> &'static str {
        match Pin::new(body).poll_frame(&mut Context::from_waker(waker)) {
            Poll::Ready(Some(Ok(_))) => "frame",
            Poll::Ready(Some(Err(_))) => "error",
            Poll::Ready(None) => "end",
            Poll::Pending => "waits",
        }
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_body_within_its_free_bytes_takes_nothing_from_the_budget() {
        let memory = budget(0);
        let body = collect(Budgeted::new(chunked(vec![FREE_BYTES / 2, FREE_BYTES / 2]), &memory)).await;
        assert_eq!(body.unwrap().len(), FREE_BYTES);
    }

    #[tokio::test]
    async fn a_body_takes_what_it_holds_beyond_its_free_bytes_and_gives_it_back_when_read() {
        let memory = budget(100 << 10);
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
    async fn a_body_that_finds_the_budget_spent_and_no_older_body_holding_it_is_refused() {
        let memory = budget(50 << 10);
        // The refused body started first: it may not cut a body that started after it.
        let refused = Budgeted::new(chunked(vec![FREE_BYTES, 20 << 10]), &memory);
        let mut holder = Budgeted::new(stalled(FREE_BYTES + (40 << 10)), &memory);
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "frame");
        assert_eq!(memory.available(), 10 << 10);

        assert_eq!(collect(refused).await.unwrap_err(), NoRoom::Spent.to_string());
        assert_eq!(memory.available(), 10 << 10, "what the refused body took is given back");
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "waits", "the younger body reads on");
        // An ordinary event still fits: the budget is only for what lies beyond the free bytes.
        assert!(collect(Budgeted::new(chunked(vec![2 << 10]), &memory)).await.is_ok());
    }

    #[tokio::test]
    async fn a_body_that_finds_the_budget_spent_cuts_the_oldest_bodies_until_it_fits() {
        let memory = budget(60 << 10);
        let wakes: Vec<Arc<Wakes>> = (0..3).map(|_| Arc::default()).collect();
        let wakers: Vec<std::task::Waker> = wakes.iter().map(|w| w.clone().into()).collect();
        // Three stalled bodies holding 20 KiB each, oldest first: the budget is spent.
        let mut holders: Vec<_> = (0..3).map(|_| Budgeted::new(stalled(FREE_BYTES + (20 << 10)), &memory)).collect();
        for (holder, waker) in holders.iter_mut().zip(&wakers) {
            assert_eq!(poll_once(holder, waker), "frame");
            assert_eq!(poll_once(holder, waker), "waits");
        }
        assert_eq!(memory.available(), 0);

        // A newcomer needing 30 KiB: the two oldest are cut, and woken though no byte came.
        let body = collect(Budgeted::new(chunked(vec![FREE_BYTES, 30 << 10]), &memory)).await;
        assert_eq!(body.unwrap().len(), FREE_BYTES + (30 << 10));
        let woken: Vec<usize> = wakes.iter().map(|w| w.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [1, 1, 0]);
        assert_eq!(poll_once(&mut holders[0], &wakers[0]), "error");
        assert_eq!(poll_once(&mut holders[1], &wakers[1]), "error");
        assert_eq!(poll_once(&mut holders[2], &wakers[2]), "waits", "the youngest is left");
        // The newcomer gave back its 30 KiB; the cut bodies' shares went to it, not back again.
        assert_eq!(memory.available(), 40 << 10);
        drop(holders);
        assert_eq!(memory.available(), 60 << 10);
    }

    #[tokio::test]
    async fn a_cut_body_ends_with_the_error_read_answers_503_for() {
        let memory = budget(20 << 10);
        let mut older = Budgeted::new(stalled(FREE_BYTES + (20 << 10)), &memory);
        assert_eq!(poll_once(&mut older, std::task::Waker::noop()), "frame");
        let younger = collect(Budgeted::new(chunked(vec![FREE_BYTES, 10 << 10]), &memory)).await;
        assert_eq!(younger.unwrap().len(), FREE_BYTES + (10 << 10));
        let frame = Pin::new(&mut older).poll_frame(&mut Context::from_waker(std::task::Waker::noop()));
        let Poll::Ready(Some(Err(error))) = frame else { panic!("the cut body ends") };
        assert!(caused_by::<NoRoom>(error.as_ref()), "{error}");
        assert_eq!(error.to_string(), NoRoom::Cut.to_string());
        assert_eq!(memory.available(), 20 << 10);
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
        let memory = budget(10 << 10);
        let mut body = Budgeted::new(Body::new(Declared(1 << 20)), &memory);
        let mut context = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut context).is_pending());
        assert_eq!(memory.available(), 10 << 10, "a head alone spends nothing");
    }
}
