//! The consuming loop against consumers that end: each reopen is paced.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;
use tokio::{sync::watch, time::Instant};

use super::*;
use crate::{
    config::ApiSettings,
    queue::{embedded::EmbeddedQueue, Delivery},
    temp_dir::TempDir,
};

/// A queue whose every consumer ends at once, as one that cannot be read does; counts its opens.
struct EndsAtOnce {
    opens: watch::Sender<u32>,
}

struct Ended;

#[async_trait]
impl Consumer for Ended {
    async fn next(&mut self) -> Option<Delivery> {
        None
    }
}

#[async_trait]
impl Source for EndsAtOnce {
    async fn open(&self, _prefetch: u16) -> Result<Box<dyn Consumer>, ConsumeError> {
        self.opens.send_modify(|opens| *opens += 1);
        // A loop that reopens without a wait would still let the test look.
        tokio::task::yield_now().await;
        Ok(Box::new(Ended))
    }

    async fn get(&self) -> Result<Option<Delivery>, ConsumeError> {
        Ok(None)
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_ends_before_handing_out_anything_is_reopened_at_the_reconnect_pace() {
    let dir = TempDir::new("relay-worker");
    let publisher: Arc<dyn Publisher> = Arc::new(EmbeddedQueue::open(&dir.0, 20).unwrap());
    let api = ApiSettings::new("http://127.0.0.1:9".parse().unwrap(), SecretString::from("key"), "ws", "PROJECT");
    let shutdown = CancellationToken::new();
    let worker =
        Arc::new(Worker::new(&WorkerSettings::new(api), publisher, Metrics::isolated(), shutdown.clone()).unwrap());
    let (opens, mut opened) = watch::channel(0);
    let started = Instant::now();
    let running = tokio::spawn(worker.run(Arc::new(EndsAtOnce { opens })));

    opened.wait_for(|opens| *opens >= 4).await.unwrap();
    // Three waits between four opens, each at least half its ceiling (the jitter's floor).
    let floor: Duration = (1..=3).map(|failures| RECONNECT.ceiling(failures) / 2).sum();
    assert!(started.elapsed() >= floor, "reopened after {:?}, under {floor:?}", started.elapsed());
    shutdown.cancel();
    running.await.unwrap();
}
