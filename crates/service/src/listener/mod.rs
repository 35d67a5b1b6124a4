//! The HTTP listeners (webhooks, admin): hyper's HTTP/1 server with the connection-level limits
//! of design §10, so that a client without the secret cannot hold capacity a signed delivery
//! needs. It knows routers and sockets, not routes, signatures or queues: the webhook handler
//! says which requests are verified through [`ConnectionGuard`].
//!
//! - At most `max_connections` open connections. At the cap, a new connection takes the place of
//!   the oldest one not handling a verified request (those that never carried one go first),
//!   which is closed: a flood churns its own connections while PolyAI's get through, and the
//!   process keeps file descriptors and memory for the broker, the API and its store.
//! - A new connection's first byte is due within the header timeout; until it comes no HTTP
//!   state (buffers) exists for it.
//! - Headers are due within the header timeout of their first byte and capped in bytes (`431`);
//!   hyper's read buffer is capped alike, which bounds what each connection costs.
//! - A keep-alive connection with no request in flight closes after the idle timeout.

mod connection;
mod places;
mod watchdog;
mod watched;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{rt::TokioTimer, server::graceful::GracefulShutdown};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use self::connection::ConnectionGuard;
use self::{connection::Connection, places::Places};
use crate::{config::ConnectionLimits, telemetry::Metrics};

/// hyper refuses a read buffer smaller than this.
const MIN_READ_BUFFER: usize = 8192;

/// Serves `router` on `listener` (named `name` in metrics and logs) until `shutdown`, then lets
/// open connections finish their requests (idle ones close at once) and returns when the last
/// one has closed.
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let places = Places::new(name, limits.max_connections, metrics);
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // The watchdog times headers and idle connections; hyper's timer would treat both alike.
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        // Never buffer more than the header cap while a head is incomplete (hyper's default is
        // ~400 KB): with `max_connections` this bounds what a flood can hold (BENCHMARKS.md).
        .max_buf_size(limits.max_header_bytes.max(MIN_READ_BUFFER));
    loop {
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
        let (place, evicted) = tokio::select! {
            _ = shutdown.cancelled() => break,
            admitted = places.admit() => admitted,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            http: http.clone(),
            router: router.clone(),
            limits: limits.clone(),
            watcher: graceful.watcher(),
            shutdown: shutdown.clone(),
            place,
        };
        tokio::spawn(connection.run(stream));
        if evicted {
            // Under a flood every accept evicts: give the connections' tasks a turn before the
            // next, so that a new one is read (and a delivery verified) long before
            // `max_connections` further accepts make it the oldest, however loaded the machine.
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Out of file descriptors or memory: wait a moment instead of spinning (nothing tells when a
/// descriptor is free again); a single connection that failed during the handshake is simply gone.
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
