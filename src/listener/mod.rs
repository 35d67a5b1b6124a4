//! The HTTP listeners (webhooks, admin): hyper's HTTP/1 server with the connection-level limits
//! of design §10, so that a client without the secret cannot hold capacity a signed delivery
//! needs. It knows routers and sockets, not routes, signatures or queues.
//!
//! - At most `max_connections` open connections: beyond, new ones wait in the kernel's backlog,
//!   and the process keeps file descriptors for the broker, the API and its store.
//! - A new connection's first byte is due within the header timeout; until it comes no HTTP
//!   state (buffers) exists for it.
//! - Headers are due within the header timeout of their first byte and capped in bytes (`431`).
//! - A keep-alive connection with no request in flight closes after the idle timeout.

mod watchdog;

use std::{convert::Infallible, sync::Arc};

use axum::{extract::Request, Router};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use self::watchdog::{Activity, Watched};
use crate::config::ConnectionLimits;

/// hyper refuses a read buffer smaller than this.
const MIN_READ_BUFFER: usize = 8192;

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish their
/// requests (idle ones close at once) and returns when the last one has closed.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnectionLimits, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // The watchdog times headers and idle connections; hyper's timer would treat both alike.
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        // Never buffer more than the header cap while a head is incomplete (hyper's default is ~400 KB).
        .max_buf_size(limits.max_header_bytes.max(MIN_READ_BUFFER));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    accept_failed(error, &shutdown).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            http: http.clone(),
            router: router.clone(),
            limits: limits.clone(),
            watcher: graceful.watcher(),
            shutdown: shutdown.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.run(stream));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Out of file descriptors or memory: wait a moment instead of spinning; a single connection
/// that failed during the handshake is simply gone.
async fn accept_failed(error: std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind::*;
    if matches!(error.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
    }
}

/// One accepted connection and what it holds.
struct Connection {
    http: http1::Builder,
    router: Router,
    limits: ConnectionLimits,
    watcher: Watcher,
    shutdown: CancellationToken,
    /// Frees a place under `max_connections` when the connection ends.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        // A silent new connection falls under the header timeout too, and costs no buffers meanwhile.
        // (`peek`, not `readable`: readiness may be reported before any byte is there.)
        let mut first = [0u8; 1];
        let first_byte = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            peeked = tokio::time::timeout(self.limits.header_timeout, stream.peek(&mut first)) => peeked,
        };
        if !matches!(first_byte, Ok(Ok(1..))) {
            return;
        }
        let activity = Activity::reading_head();
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let service = {
            let (router, activity) = (self.router, activity.clone());
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let (router, activity) = (router.clone(), activity.clone());
                activity.request_started();
                async move {
                    let response = router.oneshot(request).await;
                    activity.request_finished();
                    Ok::<_, Infallible>(match response {
                        Ok(response) => response,
                        Err(never) => match never {},
                    })
                }
            })
        };
        let connection = self.watcher.watch(self.http.serve_connection(io, service));
        // Dropping the connection closes the socket; a request in flight is never cut (it is busy).
        tokio::select! {
            _ = connection => {}
            _ = activity.expired(self.limits.header_timeout, self.limits.idle_timeout) => {}
        }
    }
}
