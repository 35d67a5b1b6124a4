//! The socket under a broker connection, opened by the relay instead of by lapin.
//!
//! For two reasons. TLS runs on tokio-rustls with the relay's own verifier: lapin's TLS support
//! brings a PKCS#12 and X.509 parsing stack the relay never uses, the longest part of lapin's
//! build. And an attempt given up can shut its socket: lapin runs a connection's I/O on a thread
//! of its own from before the handshake, with no handshake timeout, so a peer that accepts TCP and
//! never answers (a load balancer in front of a dead node) would keep that thread, its buffers and
//! the socket for as long as it holds the connection, one more per reconnect.

use std::{
    future::Future,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr},
    os::fd::{AsFd, AsRawFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_compat::Compat;
use async_rs::{traits::Reactor, util::RuntimeParts, Runtime, Tokio};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// What lapin reads and writes: plain TCP, or TLS over it, behind one type.
pub type BrokerStream = Compat<Box<dyn BrokerIo>>;

/// The runtime handed to lapin: tokio's, with the relay's socket type.
pub type BrokerRuntime = Runtime<RuntimeParts<Tokio, Sockets>>;

/// A TCP or TLS stream for lapin.
pub trait BrokerIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> BrokerIo for T {}

/// The runtime of the current tokio context, for `Connection::connector`.
pub fn runtime() -> BrokerRuntime {
    Runtime::new(RuntimeParts::new(Tokio::current(), Sockets(Tokio::current())))
}

/// tokio's reactor, with connections made as [`BrokerStream`]s: lapin's timers and heartbeats run
/// on it as on tokio's own. lapin calls `tcp_connect_addr` only when it opens the socket itself,
/// which the relay never has it do; it is here for the trait's sake.
#[derive(Clone, Debug)]
pub struct Sockets(Tokio);

impl Reactor for Sockets {
    type TcpStream = BrokerStream;
    type Sleep = <Tokio as Reactor>::Sleep;

    // The trait asks for async-rs's own `AsSysFd`, which it does not export; these are its parts.
    fn register<H: Read + Write + AsFd + AsRawFd + Send + 'static>(
        &self,
        socket: H,
    ) -> io::Result<impl futures_util::AsyncRead + futures_util::AsyncWrite + Send + Unpin + 'static> {
        self.0.register(socket)
    }

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        self.0.sleep(dur)
    }

    fn interval(&self, dur: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.0.interval(dur)
    }

    fn tcp_connect_addr(&self, addr: SocketAddr) -> impl Future<Output = io::Result<BrokerStream>> + Send + 'static {
        let connect = self.0.tcp_connect_addr(addr);
        async move { Ok(Compat::new(Box::new(connect.await?.into_inner()) as Box<dyn BrokerIo>)) }
    }
}

/// One connection attempt, as the code that awaits the handshake sees it. Dropped before
/// [`Attempt::opened`], it stops the opener (a connect to a host that drops packets waits for the
/// kernel's own timeout, about two minutes) and shuts the socket once connected, so lapin's thread
/// reads its end; either way the thread exits.
pub struct Attempt {
    socket: Arc<Mutex<Held>>,
    given_up: CancellationToken,
}

/// The same attempt, as lapin's opener sees it: where it leaves a handle to what it connected.
#[derive(Clone)]
pub struct SocketSlot {
    socket: Arc<Mutex<Held>>,
    given_up: CancellationToken,
}

enum Held {
    /// Nothing connected yet.
    Waiting,
    /// A second descriptor of the connected socket: shutting it shuts the connection's.
    Open(std::net::TcpStream),
    /// The handshake finished; the socket is the connection's.
    Opened,
    /// The attempt was given up.
    GivenUp,
}

impl Attempt {
    pub fn new() -> (Self, SocketSlot) {
        let (socket, given_up) = (Arc::new(Mutex::new(Held::Waiting)), CancellationToken::new());
        (Self { socket: socket.clone(), given_up: given_up.clone() }, SocketSlot { socket, given_up })
    }

    /// The connection is open: its socket is no longer the attempt's to shut.
    pub fn opened(self) {
        *lock(&self.socket) = Held::Opened;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.given_up.cancel();
        let mut held = lock(&self.socket);
        match std::mem::replace(&mut *held, Held::GivenUp) {
            // Both ways: lapin's reads end, and the peer sees the connection go.
            Held::Open(socket) => {
                let _ = socket.shutdown(Shutdown::Both);
            }
            Held::Opened => *held = Held::Opened,
            Held::Waiting | Held::GivenUp => {}
        }
    }
}

impl SocketSlot {
    /// The opener's work (resolving, connecting, TLS), stopped when the attempt is given up.
    pub async fn until_given_up<T>(&self, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        self.given_up.run_until_cancelled(work).await.unwrap_or_else(|| Err(over()))
    }

    /// Leaves a handle to `socket` for the attempt. Refused once the attempt is over, so an
    /// opener that connects just after it was given up drops its socket instead of going on.
    pub fn hold(&self, socket: &tokio::net::TcpStream) -> io::Result<()> {
        let mut held = lock(&self.socket);
        if !matches!(*held, Held::Waiting) {
            return Err(over());
        }
        let descriptor = socket.as_fd().try_clone_to_owned()?;
        *held = Held::Open(std::net::TcpStream::from(descriptor));
        Ok(())
    }
}

fn over() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the connection attempt is over")
}

/// The lock, whatever a panic elsewhere left in it: each state is whole.
fn lock(socket: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
