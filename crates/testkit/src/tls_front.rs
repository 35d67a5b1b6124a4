//! HTTPS in front of a plain listener, as a load balancer terminating TLS would be: each
//! connection's TLS is ended here with a certificate made by [`crate::certs`], and its bytes go on
//! to the plain listener. For tests of clients' `https://` paths against the real receiver.

use std::{net::SocketAddr, path::Path, sync::Arc};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};
use tokio_rustls::TlsAcceptor;

pub struct TlsFront {
    pub address: SocketAddr,
    accept: AbortHandle,
}

impl TlsFront {
    /// Serves `server.pem`/`server.key` of `certs` (see [`crate::certs::make`]) on a port of its
    /// own, passing each connection on to `target`.
    pub async fn start(certs: &Path, target: SocketAddr) -> Self {
        let chain = CertificateDer::pem_file_iter(certs.join("server.pem"))
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("server.pem holds certificates");
        let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a certificate and its key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends its handshake here.
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    let Ok(mut upstream) = TcpStream::connect(target).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        })
        .abort_handle();
        Self { address, accept }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
