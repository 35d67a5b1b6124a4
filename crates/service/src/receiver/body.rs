//! Reading a webhook's body: at most `RELAY_MAX_BODY`, within `RELAY_REQUEST_TIMEOUT`, and within
//! the memory that all bodies being read may hold together (`RELAY_BODY_MEMORY`, design §10).
//!
//! A body's signature can be checked only once the whole body is in, so until then anyone can
//! make the relay hold bytes: a thousand connections each sending a megabyte and stalling would
//! hold a gigabyte. Every body may hold its first [`FREE_BYTES`] without asking, which covers
//! PolyAI's events (a few KB); what a body holds beyond that comes out of one budget shared by
//! all requests, taken as the bytes arrive, never for a length only declared: otherwise a few
//! dozen heads declaring a megabyte each, and no body, would spend the budget for nothing. So
//! bodies being read hold at most `RELAY_MAX_CONNECTIONS × FREE_BYTES + RELAY_BODY_MEMORY`, and
//! for a moment what a cut body held, until its task runs and drops it.
//!
//! A body that finds the budget spent takes what the bodies that needed the budget before it
//! hold, oldest first, cutting them (each is answered 503, and a sender that has the secret
//! retries), but only bodies that have held some of it for [`CUT_AFTER`] or longer: a body that
//! arrives at network speed is read by then, and only a body still arriving after that can be
//! cut. It is answered 503 itself when those bodies do not hold enough. Refusing the newcomer
//! alone, a client without the secret that kept the budget spent with stalled bodies (32 MiB
//! every `RELAY_REQUEST_TIMEOUT`, a few MB/s) would turn away every signed event over the free
//! bytes for as long as it liked; now it must send the whole budget again every [`CUT_AFTER`]
//! (32 MiB a second) to keep it spent.
//!
//! A body gives its share back once it is read: a signed one goes on under `RELAY_MAX_IN_FLIGHT`,
//! an unsigned one is dropped.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
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
use tokio::time::Instant;

use super::{meters::WebhookMeters, rejection::Rejection};
use crate::telemetry::{names, Metrics};

/// What every body may hold without taking from the shared budget.
pub const FREE_BYTES: usize = 16 << 10;

/// How long a body holds some of the budget before a newer one may cut it: far longer than an
/// event of the default `RELAY_MAX_BODY` (1 MiB) takes to arrive at network speed once it has
/// started to.
pub const CUT_AFTER: Duration = Duration::from_secs(1);

/// The memory bodies being read may hold beyond their first [`FREE_BYTES`], all together, and
/// which bodies hold it.
pub struct BodyMemory {
    /// `RELAY_BODY_MEMORY`.
    budget: usize,
    ledger: Mutex<Ledger>,
    /// `relay_webhook_body_memory_bytes`: what the bodies hold of the budget.
    held: metrics::Gauge,
}

struct Ledger {
    available: usize,
    /// The bodies holding some of the budget, in the order they first took some: the first is the
    /// oldest.
    holders: BTreeMap<u64, Holder>,
    /// The place the next body to take some gets.
    next: u64,
}

struct Holder {
    bytes: usize,
    /// When it first took some.
    since: Instant,
    cut: Arc<CutSignal>,
}

/// A body's place among the holders, and how it learns it was cut.
struct Share {
    place: u64,
    cut: Arc<CutSignal>,
}

/// Tells a body its share was given to a newer one, and wakes it to end at once, though no byte
/// of its own comes: its sender may have stalled on purpose.
#[derive(Default)]
struct CutSignal {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl BodyMemory {
    pub fn new(budget: usize, meter: &Metrics) -> Self {
        let held = meter.record(|| metrics::gauge!(names::BODY_MEMORY));
        held.set(0.0);
        let ledger = Ledger { available: budget, holders: BTreeMap::new(), next: 0 };
        Self { budget, ledger: Mutex::new(ledger), held }
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

    /// Makes a body hold `needed` bytes of the budget (`share`: its place, once it took some),
    /// cutting older bodies, oldest first, when the budget is spent and they hold enough.
    fn hold(&self, share: &mut Option<Share>, needed: usize) -> Result<(), NoRoom> {
        let mut cut = Vec::new();
        {
            let mut ledger = self.ledger();
            let place = match share {
                // Under the lock, where cuts are made: a body cut a moment ago takes nothing more.
                Some(share) if share.cut.cut.load(Ordering::Acquire) => return Err(NoRoom::Cut),
                Some(share) => share.place,
                None => ledger.next,
            };
            let holds = ledger.holders.get(&place).map_or(0, |holder| holder.bytes);
            let Some(more) = needed.checked_sub(holds).filter(|&more| more > 0) else { return Ok(()) };
            let short = more.saturating_sub(ledger.available);
            if short > 0 {
                let now = Instant::now();
                let (mut freed, mut oldest) = (0, Vec::new());
                // In their order, the holders' `since` only grows: those old enough come first.
                for (&body, holder) in ledger.holders.range(..place) {
                    if freed >= short || now.saturating_duration_since(holder.since) < CUT_AFTER {
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
            let signal = match share {
                Some(share) => share.cut.clone(),
                None => {
                    let new = share.insert(Share { place, cut: Arc::default() });
                    ledger.next += 1;
                    new.cut.clone()
                }
            };
            let holder =
                ledger.holders.entry(place).or_insert_with(|| Holder { bytes: 0, since: Instant::now(), cut: signal });
            holder.bytes += more;
            // Under the lock: set after it, two bodies' values could land in the wrong order.
            self.held.set((self.budget - ledger.available) as f64);
        }
        for signal in cut {
            signal.waker.wake();
        }
        Ok(())
    }

    /// Gives back what a body holds, unless it was cut (its share is another's now).
    fn release(&self, share: &Share) {
        let mut ledger = self.ledger();
        let Some(holder) = ledger.holders.remove(&share.place) else { return };
        ledger.available += holder.bytes;
        self.held.set((self.budget - ledger.available) as f64);
    }
}

/// Why a body could not hold what it received.
#[derive(Debug, thiserror::Error)]
enum NoRoom {
    #[error("the memory for request bodies is spent")]
    Spent,
    #[error("the memory this body held was needed by a newer one")]
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
    let body = Limited::new(Budgeted::new(body, memory, limit), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(Rejection::SlowBody),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if cause::<LengthLimitError>(error.as_ref()).is_some() => Err(Rejection::TooLarge),
        Ok(Err(error)) => match cause::<NoRoom>(error.as_ref()) {
            Some(NoRoom::Spent) => Err(Rejection::BodyMemoryFull),
            Some(NoRoom::Cut) => Err(Rejection::BodyCut),
            None => Err(Rejection::UnreadableBody(error.to_string())),
        },
    }
}

/// `error`, or the first error it wraps, that is a `T`.
fn cause<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut source = Some(error);
    while let Some(inner) = source {
        if let Some(found) = inner.downcast_ref::<T>() {
            return Some(found);
        }
        source = inner.source();
    }
    None
}

/// A body that takes its bytes beyond [`FREE_BYTES`] from the budget before handing them on,
/// and gives them back when dropped.
struct Budgeted<'a> {
    inner: Body,
    memory: &'a BodyMemory,
    /// `RELAY_MAX_BODY`: bytes beyond it take nothing (the body is refused as too large), so that
    /// a body sent too large cuts no other.
    limit: usize,
    /// Set once it holds some of the budget (PolyAI's events never do).
    share: Option<Share>,
    /// Bytes received so far.
    received: usize,
}

impl<'a> Budgeted<'a> {
    fn new(inner: Body, memory: &'a BodyMemory, limit: usize) -> Self {
        Self { inner, memory, limit, share: None, received: 0 }
    }
}

impl http_body::Body for Budgeted<'_> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(share) = &self.share {
            // Registered before the look, so a cut after it wakes this task.
            share.cut.waker.register(cx.waker());
            if share.cut.cut.load(Ordering::Acquire) {
                return Poll::Ready(Some(Err(NoRoom::Cut.into())));
            }
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let received = self.received.saturating_add(data.remaining());
                self.received = received;
                let needed = received.saturating_sub(FREE_BYTES);
                if needed > 0 && received <= self.limit {
                    let this = &mut *self;
                    this.memory.hold(&mut this.share, needed)?;
                }
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
        if let Some(share) = &self.share {
            self.memory.release(share);
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

    /// `RELAY_MAX_BODY` in these tests.
    const LIMIT: usize = 1 << 20;

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
        let body = collect(Budgeted::new(chunked(vec![FREE_BYTES / 2, FREE_BYTES / 2]), &memory, LIMIT)).await;
        assert_eq!(body.unwrap().len(), FREE_BYTES);
    }

    #[tokio::test]
    async fn a_body_takes_what_it_holds_beyond_its_free_bytes_and_gives_it_back_when_read() {
        let memory = budget(100 << 10);
        let mut body = Budgeted::new(chunked(vec![FREE_BYTES, 30 << 10, 30 << 10]), &memory, LIMIT);
        let mut context = Context::from_waker(std::task::Waker::noop());
        for expected_available in [100 << 10, 70 << 10, 40 << 10] {
            let frame = Pin::new(&mut body).poll_frame(&mut context);
            assert!(matches!(frame, Poll::Ready(Some(Ok(_)))));
            assert_eq!(memory.available(), expected_available);
        }
        drop(body);
        assert_eq!(memory.available(), 100 << 10, "given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_finds_the_budget_spent_cuts_no_body_newer_than_it() {
        let memory = budget(50 << 10);
        // The refused body took some first; the holder took the rest after it.
        let mut refused = Budgeted::new(chunked(vec![FREE_BYTES + (5 << 10), 20 << 10]), &memory, LIMIT);
        assert_eq!(poll_once(&mut refused, std::task::Waker::noop()), "frame");
        let mut holder = Budgeted::new(stalled(FREE_BYTES + (45 << 10)), &memory, LIMIT);
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "frame");
        assert_eq!(memory.available(), 0);
        tokio::time::advance(CUT_AFTER * 2).await;

        assert_eq!(collect(refused).await.unwrap_err(), NoRoom::Spent.to_string());
        assert_eq!(memory.available(), 5 << 10, "what the refused body took is given back");
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "waits", "the newer body reads on");
        // An ordinary event still fits: the budget is only for what lies beyond the free bytes.
        assert!(collect(Budgeted::new(chunked(vec![2 << 10]), &memory, LIMIT)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_has_held_its_share_for_less_than_the_grace_is_not_cut() {
        let memory = budget(40 << 10);
        let mut holder = Budgeted::new(stalled(FREE_BYTES + (40 << 10)), &memory, LIMIT);
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "frame");
        tokio::time::advance(CUT_AFTER - Duration::from_millis(1)).await;
        let young = collect(Budgeted::new(chunked(vec![FREE_BYTES, 10 << 10]), &memory, LIMIT)).await;
        assert_eq!(young.unwrap_err(), NoRoom::Spent.to_string());
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "waits");
        tokio::time::advance(Duration::from_millis(1)).await;
        let body = collect(Budgeted::new(chunked(vec![FREE_BYTES, 10 << 10]), &memory, LIMIT)).await;
        assert_eq!(body.unwrap().len(), FREE_BYTES + (10 << 10));
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "error", "cut once its grace is over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_finds_the_budget_spent_cuts_the_oldest_bodies_until_it_fits() {
        let memory = budget(60 << 10);
        let wakes: Vec<Arc<Wakes>> = (0..3).map(|_| Arc::default()).collect();
        let wakers: Vec<std::task::Waker> = wakes.iter().map(|w| w.clone().into()).collect();
        // Three stalled bodies holding 20 KiB each, oldest first: the budget is spent.
        let mut holders: Vec<_> =
            (0..3).map(|_| Budgeted::new(stalled(FREE_BYTES + (20 << 10)), &memory, LIMIT)).collect();
        for (holder, waker) in holders.iter_mut().zip(&wakers) {
            assert_eq!(poll_once(holder, waker), "frame");
            assert_eq!(poll_once(holder, waker), "waits");
        }
        assert_eq!(memory.available(), 0);
        tokio::time::advance(CUT_AFTER).await;

        // A newcomer needing 30 KiB: the two oldest are cut, and woken though no byte came.
        let body = collect(Budgeted::new(chunked(vec![FREE_BYTES, 30 << 10]), &memory, LIMIT)).await;
        assert_eq!(body.unwrap().len(), FREE_BYTES + (30 << 10));
        let woken: Vec<usize> = wakes.iter().map(|w| w.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [1, 1, 0]);
        assert_eq!(poll_once(&mut holders[0], &wakers[0]), "error");
        assert_eq!(poll_once(&mut holders[1], &wakers[1]), "error");
        assert_eq!(poll_once(&mut holders[2], &wakers[2]), "waits", "the newest is left");
        // The newcomer gave back its 30 KiB; the cut bodies' shares went to it, not back again.
        assert_eq!(memory.available(), 40 << 10);
        drop(holders);
        assert_eq!(memory.available(), 60 << 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_body_ends_with_the_error_read_answers_503_for() {
        let memory = budget(20 << 10);
        let mut older = Budgeted::new(stalled(FREE_BYTES + (20 << 10)), &memory, LIMIT);
        assert_eq!(poll_once(&mut older, std::task::Waker::noop()), "frame");
        tokio::time::advance(CUT_AFTER).await;
        let newer = collect(Budgeted::new(chunked(vec![FREE_BYTES, 10 << 10]), &memory, LIMIT)).await;
        assert_eq!(newer.unwrap().len(), FREE_BYTES + (10 << 10));
        let frame = Pin::new(&mut older).poll_frame(&mut Context::from_waker(std::task::Waker::noop()));
        let Poll::Ready(Some(Err(error))) = frame else { panic!("the cut body ends") };
        assert!(matches!(cause::<NoRoom>(error.as_ref()), Some(NoRoom::Cut)), "{error}");
        assert_eq!(memory.available(), 20 << 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_sent_larger_than_the_limit_takes_nothing_and_cuts_no_other() {
        let memory = budget(100 << 10);
        let mut holder = Budgeted::new(stalled(FREE_BYTES + (90 << 10)), &memory, LIMIT);
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "frame");
        tokio::time::advance(CUT_AFTER).await;
        let limit = FREE_BYTES + (20 << 10);
        let body = Limited::new(Budgeted::new(chunked(vec![FREE_BYTES, 40 << 10]), &memory, limit), limit);
        let error = body.collect().await.map(|_| ()).unwrap_err();
        assert!(cause::<LengthLimitError>(error.as_ref()).is_some(), "{error}");
        assert_eq!(poll_once(&mut holder, std::task::Waker::noop()), "waits", "not cut");
        assert_eq!(memory.available(), 10 << 10);
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
        let mut body = Budgeted::new(Body::new(Declared(1 << 20)), &memory, LIMIT);
        let mut context = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut context).is_pending());
        assert_eq!(memory.available(), 10 << 10, "a head alone spends nothing");
    }
}
