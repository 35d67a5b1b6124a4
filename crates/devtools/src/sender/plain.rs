//! The sender's connection for `http://` URLs without credentials: one HTTP/1.1 keep-alive
//! connection per worker, opened on first use and again after one fails.
//!
//! reqwest's pool and layers cost the sender 12–13 µs of CPU per request more than this, about
//! as much again as the rest of a request (BENCHMARKS.md, "The load generator"); in a benchmark
//! that CPU is taken from the relay under test on the same cores. `https://` URLs, and URLs with a
//! user and password, still go through reqwest, with its TLS, proxy and credential handling.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    client::conn::http1::{self, SendRequest},
    header::{HeaderValue, CONTENT_TYPE, HOST},
    Method, Request, Uri,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{SignedHeaders, REQUEST_TIMEOUT};

pub struct PlainConnection {
    /// `host:port`, to connect to.
    address: String,
    host: HeaderValue,
    /// The path and query, the request's target.
    path: Uri,
    open: Option<SendRequest<Full<Bytes>>>,
}

impl PlainConnection {
    /// For an `http://` URL; `None` for any other, and for one with credentials in it, which
    /// reqwest turns into an `Authorization` header.
    pub fn for_url(url: &url::Url) -> Option<Self> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let address = format!("{host}:{port}");
        let host = HeaderValue::from_str(&match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        })
        .ok()?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
        .parse()
        .ok()?;
        Some(PlainConnection { address, host, path, open: None })
    }

    /// Another connection to the same URL, not opened yet.
    pub fn unopened(&self) -> Self {
        PlainConnection { address: self.address.clone(), host: self.host.clone(), path: self.path.clone(), open: None }
    }

    /// POSTs `body` with the signature headers; the status, or `None` when no answer came. A
    /// request that failed is never sent again: the server may have received it.
    /// The answer's status, or why none came.
    pub async fn post(&mut self, signed: SignedHeaders, body: String) -> Result<u16, String> {
        let error = match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(signed, body)).await {
            Ok(Ok(status)) => return Ok(status),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        // The connection's state is unknown: the next request opens another.
        self.open = None;
        Err(error)
    }

    async fn exchange(&mut self, signed: SignedHeaders, body: String) -> anyhow::Result<u16> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.path.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let response = self.ready().await?.send_request(request).await?;
        let status = response.status().as_u16();
        // Read to the end, so the connection is free for the next request.
        response.into_body().collect().await?;
        Ok(status)
    }

    /// The open connection once it can take a request, or a new one if it closed.
    async fn ready(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.open.as_ref().is_none_or(SendRequest::is_closed) {
            self.open = Some(self.connect().await?);
        }
        let sender = self.open.as_mut().expect("opened above");
        sender.ready().await?;
        Ok(sender)
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // Ends when the sender is dropped or the server closes the connection.
        tokio::spawn(connection);
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use secrecy::SecretString;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::sender::SendScheme;

    /// What the test server does with each request it reads.
    #[derive(Clone, Copy)]
    enum Answer {
        KeepAlive,
        ThenClose,
        Nothing,
    }

    /// A server on port 0 that answers `answer` and counts connections and requests.
    async fn server(answer: Answer) -> (url::Url, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/polyai-events?project=a", listener.local_addr().unwrap()).parse().unwrap();
        let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counts = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counts.0.fetch_add(1, Ordering::SeqCst);
                let requests = counts.1.clone();
                tokio::spawn(async move {
                    while read_request(&mut stream).await {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let reply: &[u8] = match answer {
                            Answer::KeepAlive => b"HTTP/1.1 204 No Content\r\n\r\n",
                            Answer::ThenClose => b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
                            Answer::Nothing => return,
                        };
                        stream.write_all(reply).await.unwrap();
                        if matches!(answer, Answer::ThenClose) {
                            return;
                        }
                    }
                });
            }
        });
        (url, connections, requests)
    }

    /// Reads one request, head and body (by its content-length); false at the end of the stream.
    async fn read_request(stream: &mut tokio::net::TcpStream) -> bool {
        let mut data = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                assert!(head.starts_with("post /polyai-events?project=a http/1.1"), "{head}");
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse().unwrap());
                if data.len() >= end + 4 + length {
                    return true;
                }
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => data.extend_from_slice(&buffer[..n]),
            }
        }
    }

    async fn post(connection: &mut PlainConnection) -> Result<u16, String> {
        let body = r#"{"type":"conversation.completed"}"#.to_owned();
        let signed =
            SignedHeaders::new(&SecretString::from("whsec_test"), SendScheme::Timestamped, "evt_1", body.as_bytes());
        connection.post(signed, body).await
    }

    #[tokio::test]
    async fn requests_share_a_connection_while_the_server_keeps_it_open_and_reopen_it_once_closed() {
        for (answer, connections_expected) in [(Answer::KeepAlive, 1), (Answer::ThenClose, 3)] {
            let (url, connections, requests) = server(answer).await;
            let mut connection = PlainConnection::for_url(&url).unwrap();
            for _ in 0..3 {
                assert_eq!(post(&mut connection).await, Ok(204));
            }
            let counts = (connections.load(Ordering::SeqCst), requests.load(Ordering::SeqCst));
            assert_eq!(counts, (connections_expected, 3));
        }
    }

    #[tokio::test]
    async fn a_request_without_an_answer_counts_as_unanswered_and_is_not_sent_again() {
        let (url, connections, requests) = server(Answer::Nothing).await;
        let mut connection = PlainConnection::for_url(&url).unwrap();
        assert!(post(&mut connection).await.is_err());
        assert_eq!((connections.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (1, 1));
        assert!(post(&mut connection).await.is_err(), "the next request opens a new connection");
        assert_eq!((connections.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (2, 2));
    }

    #[tokio::test]
    async fn a_refused_connection_counts_as_unanswered_and_says_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap();
        drop(listener);
        let error = post(&mut PlainConnection::for_url(&url).unwrap()).await.unwrap_err();
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }

    #[test]
    fn only_http_urls_with_a_host_get_a_plain_connection() {
        let plain = |url: &str| PlainConnection::for_url(&url.parse().unwrap()).map(|c| (c.address, c.host, c.path));
        let (address, host, path) = plain("http://relay.example:8080/hooks/a?x=1").unwrap();
        assert_eq!(
            (address.as_str(), host.to_str().unwrap(), path.to_string().as_str()),
            ("relay.example:8080", "relay.example:8080", "/hooks/a?x=1")
        );
        let (address, host, _) = plain("http://relay.example/polyai-events").unwrap();
        assert_eq!((address.as_str(), host.to_str().unwrap()), ("relay.example:80", "relay.example"));
        assert!(plain("https://relay.example/polyai-events").is_none());
        assert!(plain("http://user:password@relay.example/polyai-events").is_none(), "credentials go through reqwest");
    }
}
