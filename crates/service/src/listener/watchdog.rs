//! What each connection is doing, for the limits hyper has no setting for: headers due within the
//! header timeout of their first byte (or of the accept), an idle keep-alive connection closed
//! after the idle timeout, and which connections may be evicted at the connection cap. hyper's
//! own `header_read_timeout` starts again as soon as a connection goes idle, so it would close
//! every keep-alive connection after the (short) header timeout.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::Poll,
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// A connection's phase. Only [`Phase::Busy`] protects it from eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request's head (or, new, for its first byte): the header timeout runs.
    Head,
    /// A head is in and the request is being handled, not verified yet (its body may still be
    /// arriving; the handler bounds that): no connection timeout, evictable.
    Request,
    /// A request verified as PolyAI's is being handled: never timed out nor evicted.
    Busy,
    /// The answer is out; waiting for the next request: the idle timeout runs.
    Idle,
    /// Evicted: the connection closes, and no request on it starts any more.
    Cut,
}

impl Phase {
    const ALL: [Phase; 5] = [Phase::Head, Phase::Request, Phase::Busy, Phase::Idle, Phase::Cut];

    /// The `phase` label of the evictions metric.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Head => "head",
            Phase::Request => "request",
            Phase::Busy => "busy",
            Phase::Idle => "idle",
            Phase::Cut => "cut",
        }
    }
}

/// Bits of the state word that hold the phase; the rest holds when it started.
const PHASE_BITS: u32 = 3;

/// What a connection is doing, and since when: written by the socket wrapper, the service and
/// the evicting accept loop, read by [`Activity::closing`].
///
/// Every phase change but [`Activity::cut`] is made by the connection's own task, while it polls
/// hyper's connection, and that task polls [`Activity::closing`] right after (`Connection::run`),
/// so those changes need no wake-up. Waking the task from inside its own poll would make tokio
/// reschedule it and wake an idle worker: about one needless thread wake-up per webhook.
pub struct Activity {
    /// Phase start times are kept as milliseconds from here (tokio's clock, for paused tests).
    origin: Instant,
    /// The phase and the milliseconds from `origin` to its start, in one word so that a phase
    /// and its start always change together, and an eviction cannot race a request's start.
    state: AtomicU64,
    /// Set once a request on this connection was verified: such a connection (PolyAI's) is
    /// evicted only after every connection that never carried one.
    vouched: AtomicBool,
    /// Wakes [`Activity::closing`] when the connection is cut, the one change made elsewhere.
    cut: Notify,
    /// Shared by a listener's connections: wakes its accept loop, waiting for a place because
    /// every connection was busy, when one stops being busy (it may be evicted now).
    not_busy: Arc<Notify>,
}

impl Activity {
    /// A connection accepted just now, waiting for its first request's head.
    pub fn accepted(not_busy: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            state: AtomicU64::new(Phase::Head as u64),
            vouched: AtomicBool::new(false),
            cut: Notify::new(),
            not_busy,
        })
    }

    fn load(&self) -> (Phase, Duration) {
        Self::decode(self.state.load(Ordering::Acquire))
    }

    fn decode(state: u64) -> (Phase, Duration) {
        let phase = Phase::ALL[(state & ((1 << PHASE_BITS) - 1)) as usize];
        (phase, Duration::from_millis(state >> PHASE_BITS))
    }

    /// Moves to `to`, starting now, if the current phase is one of `from`; the phase it was in.
    fn enter(&self, from: &[Phase], to: Phase) -> Result<Phase, Phase> {
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let mut previous = Phase::Cut;
        let result = self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
            previous = Phase::ALL[(state & ((1 << PHASE_BITS) - 1)) as usize];
            from.contains(&previous).then_some(now_ms << PHASE_BITS | to as u64)
        });
        result.map(|_| previous).map_err(|_| previous)
    }

    /// The first byte of a new connection came: its head is due within the header timeout of it.
    pub fn first_byte(&self) {
        let _ = self.enter(&[Phase::Head], Phase::Head);
    }

    /// Bytes arrived: on an idle connection they start the next request's head.
    pub fn bytes_arrived(&self) {
        if self.load().0 == Phase::Idle {
            let _ = self.enter(&[Phase::Idle], Phase::Head);
        }
    }

    /// A request's head is complete and it goes to the handler (from `Idle` too: a pipelined
    /// request is parsed from what was already read). False if the connection was evicted.
    pub fn request_started(&self) -> bool {
        self.enter(&[Phase::Head, Phase::Idle], Phase::Request).is_ok()
    }

    /// The request was verified (it is PolyAI's): from now until its answer is ready the
    /// connection is never evicted. False if it was evicted before: its answer would reach no one.
    pub fn protect(&self) -> bool {
        self.vouched.store(true, Ordering::Release);
        matches!(self.enter(&[Phase::Request], Phase::Busy), Ok(_) | Err(Phase::Busy))
    }

    /// The handler has answered; hyper writes the answer in the same poll of the connection, so
    /// it is in the socket before an eviction can drop it. Idle until the next request's first byte.
    pub fn request_finished(&self) {
        if let Ok(Phase::Busy) = self.enter(&[Phase::Request, Phase::Busy], Phase::Idle) {
            self.not_busy.notify_one();
        }
    }

    /// Evicts the connection unless it is busy with a verified request (or already cut); the
    /// phase it was in, if it was evicted.
    pub fn cut(&self) -> Option<Phase> {
        let cut = self.enter(&[Phase::Head, Phase::Request, Phase::Idle], Phase::Cut).ok();
        if cut.is_some() {
            // Made by the accept loop, not the connection's task: wake it to close.
            self.cut.notify_one();
        }
        cut
    }

    /// Whether a request on this connection was ever verified.
    pub fn vouched(&self) -> bool {
        self.vouched.load(Ordering::Acquire)
    }

    /// Resolves once the connection has outstayed the limit of its phase, or was evicted.
    ///
    /// It looks at the phase each time it is polled: the connection's task polls it after every
    /// poll of the connection, which is where the other phase changes happen (see [`Activity`]).
    pub async fn closing(&self, header_timeout: Duration, idle_timeout: Duration) {
        let cut = self.cut.notified();
        tokio::pin!(cut);
        // Armed for the phase last seen in Head or Idle, and reset when that phase changes.
        let expiry = tokio::time::sleep_until(self.origin);
        tokio::pin!(expiry);
        let mut armed_for = None;
        std::future::poll_fn(|cx| {
            // Registered before the phase is read: a cut in between finds the waiter, or leaves
            // a permit that completes this at once.
            if cut.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let state = self.state.load(Ordering::Acquire);
            let (phase, since) = Self::decode(state);
            let limit = match phase {
                Phase::Head => header_timeout,
                Phase::Idle => idle_timeout,
                Phase::Cut => return Poll::Ready(()),
                // Ends, and is left, within the connection's own poll.
                Phase::Request | Phase::Busy => return Poll::Pending,
            };
            if armed_for != Some(state) {
                expiry.as_mut().reset(self.origin + since + limit);
                armed_for = Some(state);
            }
            // Ready only once the limit of the phase it was armed for has passed.
            expiry.as_mut().poll(cx)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn accepted() -> Arc<Activity> {
        Activity::accepted(Arc::new(Notify::new()))
    }

    #[tokio::test(start_paused = true)]
    async fn headers_idle_and_requests_each_have_their_own_limit() {
        let (header, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let activity = accepted();
        let started = Instant::now();
        activity.closing(header, idle).await;
        assert_eq!(started.elapsed(), header);

        // The first byte restarts the header timeout.
        let activity = accepted();
        tokio::time::sleep(Duration::from_secs(4)).await;
        activity.first_byte();
        let started = Instant::now();
        activity.closing(header, idle).await;
        assert_eq!(started.elapsed(), header);

        assert!(activity.request_started());
        activity.request_finished();
        let started = Instant::now();
        activity.closing(header, idle).await;
        assert_eq!(started.elapsed(), idle);

        // A request being handled, verified or not, never expires on its own; the idle phase
        // starts when the answer is out. As in `Connection::run`, `closing` is polled after each
        // change, by the task that makes it.
        assert!(activity.request_started());
        let closing = activity.closing(header, idle);
        tokio::pin!(closing);
        assert!(closing.as_mut().now_or_never().is_none());
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(closing.as_mut().now_or_never().is_none(), "a request in flight timed out");
        assert!(activity.protect());
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(closing.as_mut().now_or_never().is_none(), "a verified request timed out");
        activity.request_finished();
        assert!(closing.as_mut().now_or_never().is_none());
        tokio::time::sleep(Duration::from_secs(10)).await;
        // An idle connection's first byte shortens its deadline to the header timeout.
        activity.bytes_arrived();
        let started = Instant::now();
        closing.await;
        assert_eq!(started.elapsed(), header);
    }

    /// Waking a task from inside its own poll makes tokio reschedule it and wake an idle worker:
    /// the phase changes the connection's task makes must not wake it.
    #[tokio::test(start_paused = true)]
    async fn the_connections_own_phase_changes_wake_nothing() {
        struct Counting(AtomicU64);
        impl std::task::Wake for Counting {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(Counting(AtomicU64::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let activity = accepted();
        let closing = activity.closing(Duration::from_secs(5), Duration::from_secs(60));
        tokio::pin!(closing);
        for _ in 0..2 {
            assert!(closing.as_mut().poll(&mut cx).is_pending());
            activity.bytes_arrived();
            assert!(activity.request_started());
            assert!(closing.as_mut().poll(&mut cx).is_pending());
            assert!(activity.protect());
            activity.request_finished();
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        // A cut comes from the accept loop: that one wakes it.
        activity.cut();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(closing.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn only_a_verified_request_in_flight_protects_a_connection_from_eviction() {
        let activity = accepted();
        assert!(activity.request_started());
        assert!(activity.protect());
        assert!(activity.vouched());
        assert_eq!(activity.cut(), None, "a busy connection was cut");
        activity.request_finished();
        assert_eq!(activity.cut(), Some(Phase::Idle));
        assert_eq!(activity.cut(), None, "cut twice");

        let unverified = accepted();
        assert!(unverified.request_started());
        assert_eq!(unverified.cut(), Some(Phase::Request));
        assert!(!accepted().vouched());
        assert_eq!(accepted().cut(), Some(Phase::Head));
    }

    #[test]
    fn once_cut_no_request_starts_nor_is_protected() {
        let activity = accepted();
        activity.cut();
        assert!(!activity.request_started());
        assert!(!activity.protect());
        activity.bytes_arrived();
        activity.request_finished();
        assert_eq!(activity.load().0, Phase::Cut);

        let mid_request = accepted();
        assert!(mid_request.request_started());
        mid_request.cut();
        assert!(!mid_request.protect(), "a request on an evicted connection was protected");
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_connection_closes_at_once_whatever_its_phase() {
        for phase in [Phase::Head, Phase::Request, Phase::Idle] {
            let activity = accepted();
            if phase != Phase::Head {
                assert!(activity.request_started());
            }
            if phase == Phase::Idle {
                activity.request_finished();
            }
            assert_eq!(activity.load().0, phase);
            // Waiting in a task of its own, as the connection's task is while the accept loop cuts.
            let watch = {
                let activity = activity.clone();
                tokio::spawn(async move { activity.closing(Duration::from_secs(5), Duration::from_secs(60)).await })
            };
            tokio::task::yield_now().await;
            let started = Instant::now();
            assert_eq!(activity.cut(), Some(phase));
            watch.await.unwrap();
            assert_eq!(started.elapsed(), Duration::ZERO, "{phase:?}");
        }
    }

    #[tokio::test]
    async fn a_busy_connection_becoming_idle_wakes_the_accept_loop() {
        let not_busy = Arc::new(Notify::new());
        let activity = Activity::accepted(not_busy.clone());
        assert!(activity.request_started());
        // An unverified request ending makes nothing evictable that was not already.
        activity.request_finished();
        assert!(not_busy.notified().now_or_never().is_none());
        assert!(activity.request_started());
        assert!(activity.protect());
        activity.request_finished();
        tokio::time::timeout(Duration::from_secs(5), not_busy.notified()).await.expect("woken");
    }
}
