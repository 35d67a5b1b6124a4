//! Opening a connection: each of the broker's addresses in turn, with TLS as configured.

use std::{
    net::SocketAddr,
    str::FromStr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use async_compat::Compat;
use lapin::{
    tcp::AsyncTcpStream,
    uri::{AMQPScheme, AMQPUri},
    Connection, ConnectionProperties,
};
use rustls::pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{
    describe,
    socket::{self, Attempt, BrokerIo, BrokerRuntime, BrokerStream},
    tls,
};
use crate::{
    config::AmqpTarget,
    telemetry::{names, Metrics},
};

/// Longest one address may take to accept a connection before the next one is tried: a node
/// cut off by the network never answers, and the others should not wait long for it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest frame asked of the broker unless the URL sets `frame_max`. lapin keeps a receive
/// and a send buffer of 32 frames each, zero-filled: at RabbitMQ's default of 128 KiB that is
/// 8 MiB resident per connection, most of an idle relay's heap (BENCHMARKS.md). At 16 KiB it is
/// 1 MiB; a larger message travels as several body frames, which AMQP is made for.
const FRAME_MAX: u32 = 16 * 1024;

/// The heartbeat asked of the broker unless the URL sets `heartbeat`, in seconds. lapin gives up
/// on a connection that has read nothing for two of them; at RabbitMQ's default of 60 s, a node
/// gone silent (frozen, or cut off by a network that drops packets without closing anything) kept
/// the relay ready and waiting on it for two minutes, each webhook held to the ack deadline. At 10 s
/// it is left after about 20 s for the next address; RabbitMQ advises 5 to 20 s.
const HEARTBEAT: u16 = 10;

/// Connects to the first address that answers, starting after the one used last.
pub struct Connector {
    addresses: Vec<SecretString>,
    /// For `amqps://` addresses; an error (a file that does not parse) fails every TLS attempt.
    tls: Result<TlsConnector, String>,
    /// The address tried first next time: the one after the last that worked, so a reconnect
    /// after a node is lost tries another node first instead of waiting for that one.
    next: AtomicUsize,
    /// Where failed attempts are counted: this relay's recorder.
    metrics: Metrics,
    /// [`ATTEMPT_TIMEOUT`], shorter in tests.
    attempt_timeout: Duration,
}

impl Connector {
    pub fn new(target: &AmqpTarget, metrics: Metrics) -> Self {
        let tls = if target.uses_tls() { tls::connector(&target.tls) } else { Err("no amqps:// address".to_owned()) };
        if target.uses_tls() && !target.tls.verify_hostname {
            warn_once_about_hostnames();
        }
        Self {
            addresses: target.addresses.clone(),
            tls,
            next: AtomicUsize::new(0),
            metrics,
            attempt_timeout: ATTEMPT_TIMEOUT,
        }
    }

    /// Opens a connection named for the management UI; returns it with the `host:port` it
    /// reached. Errors name hosts, never URLs: they hold a password.
    pub async fn connect(&self, role: &str) -> Result<(Connection, String), String> {
        let start = self.next.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for offset in 0..self.addresses.len() {
            let index = (start + offset) % self.addresses.len();
            let (uri, host) = match self.endpoint(index) {
                Ok(endpoint) => endpoint,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            match self.attempt(uri, role).await {
                Ok(connection) => {
                    self.next.store((index + 1) % self.addresses.len(), Ordering::Relaxed);
                    return Ok((connection, host));
                }
                Err(error) => {
                    self.metrics.record(|| {
                        metrics::counter!(names::BROKER_CONNECT_FAILURES, "role" => role.to_owned()).increment(1)
                    });
                    errors.push(format!("{host}: {error}"));
                }
            }
        }
        Err(errors.join("; "))
    }

    /// The parsed URL of address `index`, with its `host:port` for the logs.
    fn endpoint(&self, index: usize) -> Result<(AMQPUri, String), String> {
        // Validated at start-up (config::amqp), so this fails only for a hand-built target; the
        // parser's message could quote the password, so it is not passed on.
        let text = self.addresses[index].expose_secret();
        let mut uri = AMQPUri::from_str(text).map_err(|_| format!("address {} is not a valid AMQP URL", index + 1))?;
        // lapin's parser keeps a host only when it is a name: an IPv6 address became `localhost`,
        // another broker than the one named, or none.
        if let Ok(url) = url::Url::parse(text) {
            if let Some(url::Host::Ipv6(address)) = url.host() {
                uri.authority.host = address.to_string();
            }
        }
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        uri.query.heartbeat.get_or_insert(HEARTBEAT);
        let host = match uri.authority.host.contains(':') {
            true => format!("[{}]:{}", uri.authority.host, uri.authority.port),
            false => format!("{}:{}", uri.authority.host, uri.authority.port),
        };
        Ok((uri, host))
    }

    async fn attempt(&self, uri: AMQPUri, role: &str) -> Result<Connection, String> {
        let properties = ConnectionProperties::default().with_connection_name(format!("polyai-relay {role}").into());
        let tls = match uri.scheme {
            AMQPScheme::AMQP => None,
            AMQPScheme::AMQPS => Some(self.tls.clone()?),
        };
        let (attempt, slot) = Attempt::new();
        let within = self.attempt_timeout;
        let open = async move |uri: AMQPUri, _: BrokerRuntime| -> lapin::Result<AsyncTcpStream<BrokerStream>> {
            let host = uri.authority.host;
            let stream = slot.until_given_up(async {
                let addresses: Vec<_> = tokio::net::lookup_host((host.as_str(), uri.authority.port)).await?.collect();
                let tcp = connect_first(&addresses, within).await?;
                tcp.set_nodelay(true)?;
                slot.hold(&tcp)?;
                let stream: Box<dyn BrokerIo> = match &tls {
                    None => Box::new(tcp),
                    Some(tls) => {
                        let name = ServerName::try_from(host.clone()).map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidInput,
                                "the host is not a valid TLS server name",
                            )
                        })?;
                        Box::new(tls.connect(name, tcp).await?)
                    }
                };
                Ok(stream)
            });
            Ok(AsyncTcpStream::Plain(Compat::new(stream.await?)))
        };
        let connect = Connection::connector(uri, socket::runtime(), open, properties);
        // Whatever ends the wait but an open connection drops `attempt`, which stops the opener
        // and shuts the socket.
        match tokio::time::timeout(self.attempt_timeout, connect).await {
            Ok(Ok(connection)) => {
                attempt.opened();
                Ok(connection)
            }
            Ok(Err(error)) => Err(describe(&error)),
            Err(_) => Err(format!("no answer within {:?}", self.attempt_timeout)),
        }
    }
}

/// The least time an address is given to accept: a lost SYN is sent again after a second.
const LEAST_SHARE: Duration = Duration::from_secs(1);

/// Connects to the first of `addresses` (one host name's) that answers, giving each an equal
/// share of what is left of `within` (a second at least). One after the other without a limit
/// each, an address whose packets are dropped (a node gone, still in DNS) held the attempt for all
/// its time, on every reconnect, since the resolver sorts the same way each time: the others were
/// never tried.
async fn connect_first(addresses: &[SocketAddr], within: Duration) -> std::io::Result<TcpStream> {
    let deadline = tokio::time::Instant::now() + within;
    let mut errors = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let untried = u32::try_from(addresses.len() - index).unwrap_or(u32::MAX);
        let share = (left / untried).max(LEAST_SHARE.min(within));
        match tokio::time::timeout(share, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(error)) => errors.push(format!("{address}: {error}")),
            Err(_) => errors.push(format!("{address}: no answer within {share:?}")),
        }
    }
    if errors.is_empty() {
        errors.push("the host name resolves to no address".to_owned());
    }
    Err(std::io::Error::other(errors.join("; ")))
}

/// Connects to every address once, for `check`: each `host:port` with what happened there.
pub async fn reach_each(target: &AmqpTarget) -> Vec<(String, Result<(), String>)> {
    // `check` serves no /metrics: its failures are reported line by line, not counted.
    let connector = Connector::new(target, Metrics::isolated());
    let mut results = Vec::new();
    for index in 0..connector.addresses.len() {
        let result = match connector.endpoint(index) {
            Ok((uri, host)) => match connector.attempt(uri, "check").await {
                Ok(connection) => {
                    let _ = connection.close(200, "check done".into()).await;
                    (host, Ok(()))
                }
                Err(error) => (host, Err(error)),
            },
            Err(error) => (format!("address {}", index + 1), Err(error)),
        };
        results.push(result);
    }
    results
}

/// Said once per process, however many connections are opened.
fn warn_once_about_hostnames() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "AMQP_TLS_VERIFY_HOSTNAME=false: the broker's certificate is not checked against the host of AMQP_URL; \
             any certificate AMQP_TLS_CA_FILE signed is accepted, so anyone holding one can pose as the broker"
        );
    });
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::config::TlsSettings;

    fn connector(url: &str) -> Connector {
        let target = AmqpTarget { tls: TlsSettings::default(), ..AmqpTarget::single(SecretString::from(url)) };
        Connector::new(&target, Metrics::isolated())
    }

    #[test]
    fn small_frames_are_asked_for_unless_the_url_names_a_size() {
        let (uri, _) = connector("amqp://guest:guest@127.0.0.1:5672/%2f").endpoint(0).unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        let (uri, _) = connector("amqp://guest:guest@127.0.0.1:5672/%2f?frame_max=131072").endpoint(0).unwrap();
        assert_eq!(uri.query.frame_max, Some(131_072));
    }

    // Each attempt below is given up; none may leave lapin's I/O thread or its socket behind.
    // One test, since no other test of this crate connects to a broker: every such thread of the
    // process is this one's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_given_up_ends_its_io_thread_and_its_socket() {
        // A load balancer in front of a dead node accepts TCP and never answers: given up in the
        // AMQP handshake, or in the TLS one.
        for scheme in ["amqp", "amqps"] {
            let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = peer.local_addr().unwrap().port();
            given_up(&format!("{scheme}://guest:guest@127.0.0.1:{port}/%2f")).await;

            let (mut accepted, _) = peer.accept().await.unwrap();
            let mut buffer = [0; 512];
            let ended = tokio::time::timeout(Duration::from_secs(30), async {
                while let Ok(1..) = tokio::io::AsyncReadExt::read(&mut accepted, &mut buffer).await {}
            })
            .await;
            assert!(ended.is_ok(), "{scheme}: the socket of an attempt given up is still open");
            io_thread_ends(scheme).await;
        }

        // A host whose packets are dropped: given up while connecting. A listener whose queue of
        // connections is full drops the SYNs of the next ones.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let _full = socket.listen(0).unwrap();
        let mut queued = Vec::new();
        while let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(("127.0.0.1", port))).await
        {
            queued.push(stream);
        }
        given_up(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f")).await;
        io_thread_ends("connecting").await;
    }

    #[tokio::test]
    async fn a_host_name_whose_first_address_drops_packets_is_reached_at_the_next() {
        // A listener whose queue of connections is full drops the SYNs of the next ones.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let silent = socket.local_addr().unwrap();
        let _full = socket.listen(0).unwrap();
        let mut queued = Vec::new();
        while let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(silent)).await {
            queued.push(stream);
        }
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = answering.local_addr().unwrap();

        let tcp = connect_first(&[silent, good], Duration::from_secs(2)).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), good);
        let error = connect_first(&[silent], Duration::from_millis(200)).await.unwrap_err().to_string();
        assert!(error.contains(&silent.to_string()) && error.contains("no answer within"), "{error}");
    }

    async fn given_up(url: &str) {
        let mut connector = connector(url);
        connector.attempt_timeout = Duration::from_millis(300);
        let error = connector.connect("test").await.unwrap_err();
        assert!(error.contains("no answer within"), "{error}");
    }

    async fn io_thread_ends(case: &str) {
        let gone = tokio::time::timeout(Duration::from_secs(30), async {
            while io_threads() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "{case}: lapin's I/O thread outlives the attempt given up");
    }

    /// lapin's I/O threads in this process, by the name lapin gives them.
    fn io_threads() -> usize {
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        let names = tasks.filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok());
        names.filter(|name| name.trim_end() == "lapin-io-loop").count()
    }

    #[test]
    fn an_ipv6_address_is_the_host_reached() {
        let (uri, host) = connector("amqp://guest:guest@[fd00::5]:5672/%2f").endpoint(0).unwrap();
        assert_eq!((uri.authority.host.as_str(), host.as_str()), ("fd00::5", "[fd00::5]:5672"));
        let (uri, host) = connector("amqps://guest:guest@10.0.0.5/%2f").endpoint(0).unwrap();
        assert_eq!((uri.authority.host.as_str(), host.as_str()), ("10.0.0.5", "10.0.0.5:5671"));
        let (uri, _) = connector("amqp://guest:guest@broker.internal:5672/%2f").endpoint(0).unwrap();
        assert_eq!(uri.authority.host, "broker.internal");
    }

    #[test]
    fn short_heartbeats_are_asked_for_unless_the_url_names_an_interval() {
        let (uri, _) = connector("amqp://guest:guest@127.0.0.1:5672/%2f").endpoint(0).unwrap();
        assert_eq!(uri.query.heartbeat, Some(HEARTBEAT));
        let (uri, _) = connector("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=30").endpoint(0).unwrap();
        assert_eq!(uri.query.heartbeat, Some(30));
        // 0 turns heartbeats off on the relay's side; the broker's own interval then applies.
        let (uri, _) = connector("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=0").endpoint(0).unwrap();
        assert_eq!(uri.query.heartbeat, Some(0));
    }
}
