//! A TCP proxy between the relay and RabbitMQ that a test can cut and restore, as a network
//! failure would: every open connection dropped at once, new ones refused until restored. Or
//! stall: connections stay open but nothing goes through (the broker goes silent) until resumed.
//! examples/spool_outage.rs runs its outage through it too.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::AbortHandle,
};

struct State {
    /// The open connections; `None` while cut. One lock for both, so a connection accepted as
    /// the cut happens is either refused or aborted by it, never missed.
    connections: Mutex<Option<Vec<AbortHandle>>>,
    /// False while stalled: bytes are held, in both directions, until it is true again.
    flowing: watch::Sender<bool>,
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
        let state = Arc::new(State { connections: Mutex::new(Some(Vec::new())), flowing: watch::Sender::new(true) });
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut connections = accept_state.connections.lock().unwrap();
                let Some(connections) = connections.as_mut() else {
                    drop(client);
                    continue;
                };
                let flowing = accept_state.flowing.clone();
                let task = tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(target).await {
                        let (client_read, client_write) = client.into_split();
                        let (upstream_read, upstream_write) = upstream.into_split();
                        tokio::select! {
                            _ = forward(client_read, upstream_write, flowing.subscribe()) => {}
                            _ = forward(upstream_read, client_write, flowing.subscribe()) => {}
                        }
                    } else {
                        drop(client);
                    }
                });
                connections.push(task.abort_handle());
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
        for connection in self.state.connections.lock().unwrap().take().into_iter().flatten() {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.state.connections.lock().unwrap().get_or_insert_with(Vec::new);
    }

    /// Holds every byte in both directions, connections left open: the broker goes silent.
    pub fn stall(&self) {
        self.state.flowing.send_replace(false);
    }

    /// Passes on what was held, and what comes next.
    pub fn resume(&self) {
        self.state.flowing.send_replace(true);
    }
}

/// Copies `from` to `to`, holding what it read while the proxy is stalled.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut flowing: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 << 10];
    loop {
        let Ok(read @ 1..) = from.read(&mut buffer).await else { return };
        if flowing.wait_for(|flowing| *flowing).await.is_err() || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
