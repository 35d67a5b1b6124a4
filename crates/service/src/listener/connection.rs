//! One accepted connection: its first byte awaited without HTTP state, then hyper serving it
//! until it closes, outstays its phase's timeout, or is evicted.

use std::{convert::Infallible, sync::Arc};

use axum::{extract::Request, response::IntoResponse, Router};
use hyper::{body::Incoming, http::StatusCode, server::conn::http1};
use hyper_util::{rt::TokioIo, server::graceful::Watcher};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{places::Place, watchdog::Activity, watched::Watched};
use crate::config::ConnectionLimits;

/// Given to every request (an extension): the handler that verifies a request's signature
/// protects its connection from eviction with it.
#[derive(Clone)]
pub struct ConnectionGuard(Arc<Activity>);

impl ConnectionGuard {
    /// The request is verified as PolyAI's: its connection is not evicted until the answer is
    /// out, and afterwards only once no other connection can be. False if it was evicted
    /// already: the answer would reach no one, so the request should go no further.
    pub fn protect(&self) -> bool {
        self.0.protect()
    }
}

/// One accepted connection and what it holds.
pub struct Connection {
    /// hyper's HTTP/1 settings (header cap, buffer sizes), shared by the listener's connections.
    pub http: http1::Builder,
    /// What answers the requests.
    pub router: Router,
    /// The timeouts the connection's phases are held to.
    pub limits: ConnectionLimits,
    /// Lets a graceful shutdown wait for the connection's request in flight.
    pub watcher: Watcher,
    /// Ends a connection still waiting for its first byte (hyper's graceful shutdown ends the rest).
    pub shutdown: CancellationToken,
    /// Its place under `max_connections` (freed when the connection ends) and its phase.
    pub place: Place,
}

impl Connection {
    pub async fn run(self, stream: TcpStream) {
        let activity = self.place.activity().clone();
        let closing = activity.closing(self.limits.header_timeout, self.limits.idle_timeout);
        tokio::pin!(closing);
        // A silent new connection falls under the header timeout too, and costs no buffers meanwhile.
        // (`peek`, not `readable`: readiness may be reported before any byte is there.)
        let mut first = [0u8; 1];
        tokio::select! {
            _ = self.shutdown.cancelled() => return,
            _ = &mut closing => return,
            peeked = stream.peek(&mut first) => if !matches!(peeked, Ok(1..)) {
                return;
            },
        }
        activity.first_byte();
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let service = {
            let (router, activity) = (self.router, activity.clone());
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let (router, activity) = (router.clone(), activity.clone());
                let started = activity.request_started();
                request.extensions_mut().insert(ConnectionGuard(activity.clone()));
                async move {
                    if !started {
                        // Evicted a moment ago: the connection closes before this could be answered.
                        return Ok::<_, Infallible>(StatusCode::SERVICE_UNAVAILABLE.into_response());
                    }
                    let response = router.oneshot(request).await;
                    activity.request_finished();
                    Ok(match response {
                        Ok(response) => response,
                        Err(never) => match never {},
                    })
                }
            })
        };
        let connection = self.watcher.watch(self.http.serve_connection(io, service));
        // Dropping the connection closes the socket; a verified request in flight is never cut
        // (it is busy), nor is any request by the timeouts (the handler bounds it).
        tokio::select! {
            // The connection first: `closing` then sees the phase its poll left (watchdog.rs).
            biased;
            _ = connection => {}
            _ = closing => {}
        }
    }
}
