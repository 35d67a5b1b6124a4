//! A TCP proxy between the relay and RabbitMQ that a test can cut and restore, as a network
//! failure would: every open connection dropped at once, new ones refused until restored.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

struct State {
    open: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
}

pub struct Proxy {
    pub address: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let state = Arc::new(State { open: AtomicBool::new(true), connections: Mutex::new(Vec::new()) });
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_state.open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                accept_state.connections.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Self { address, state, accept }
    }

    /// An AMQP URL that goes through the proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
