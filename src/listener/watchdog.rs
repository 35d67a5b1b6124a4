//! Per-connection timeouts hyper has no setting for: headers due within the header timeout of
//! their first byte (or of the accept), and an idle keep-alive connection closed after the idle
//! timeout. hyper's own `header_read_timeout` starts again as soon as a connection goes idle, so
//! it would close every keep-alive connection after the (short) header timeout.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// What a connection is doing, and since when: written by the socket wrapper and the service,
/// read by [`Activity::expired`].
pub struct Activity {
    origin: Instant,
    phase: AtomicU8,
    /// Milliseconds from `origin` to the start of the phase.
    since_ms: AtomicU64,
    changed: Notify,
}

impl Activity {
    /// A connection whose headers are being read from now (it was accepted, or its first byte came).
    pub fn reading_head() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            phase: AtomicU8::new(HEAD),
            since_ms: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    fn enter(&self, phase: u8) {
        self.since_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Release);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// A request's headers are complete and it is being handled: no connection timeout applies
    /// (the handler bounds the body and the answer).
    pub fn request_started(&self) {
        self.enter(BUSY);
    }

    /// The answer is out: the connection is idle until the next request's first byte.
    pub fn request_finished(&self) {
        self.enter(IDLE);
    }

    /// Bytes arrived: on an idle connection they start the next request's headers.
    fn bytes_arrived(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.enter(HEAD);
        }
    }

    /// Resolves once the connection has outstayed the limit of its phase.
    pub async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let limit = match self.phase.load(Ordering::Acquire) {
                HEAD => header_timeout,
                IDLE => idle_timeout,
                _ => {
                    changed.await;
                    continue;
                }
            };
            let deadline = self.origin + Duration::from_millis(self.since_ms.load(Ordering::Acquire)) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }
}

/// A socket that reports arriving bytes to its connection's [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn headers_idle_and_busy_each_have_their_own_limit() {
        let (header, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let activity = Activity::reading_head();
        let started = Instant::now();
        activity.expired(header, idle).await;
        assert_eq!(started.elapsed(), header);

        activity.request_finished();
        let started = Instant::now();
        activity.expired(header, idle).await;
        assert_eq!(started.elapsed(), idle);

        // Busy never expires on its own; the next idle phase starts when the answer is out.
        activity.request_started();
        let watch = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired(header, idle).await })
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watch.is_finished());
        activity.request_finished();
        tokio::time::sleep(Duration::from_secs(10)).await;
        // An idle connection's first byte shortens its deadline to the header timeout.
        activity.bytes_arrived();
        let started = Instant::now();
        watch.await.unwrap();
        assert_eq!(started.elapsed(), header);
    }
}
