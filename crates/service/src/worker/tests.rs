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

/// A queue whose every consumer hands out nothing and ends `after` it was opened, as one that
/// cannot be read does; counts its opens.
struct EndsAfter {
    after: Duration,
    opens: watch::Sender<u32>,
}

struct Ends(Duration);

#[async_trait]
impl Consumer for Ends {
    async fn next(&mut self) -> Option<Delivery> {
        tokio::time::sleep(self.0).await;
        None
    }
}

#[async_trait]
impl Source for EndsAfter {
    async fn open(&self, _prefetch: u16) -> Result<Box<dyn Consumer>, ConsumeError> {
        self.opens.send_modify(|opens| *opens += 1);
        // A loop that reopens without a wait would still let the test look.
        tokio::task::yield_now().await;
        Ok(Box::new(Ends(self.after)))
    }

    async fn get(&self) -> Result<Option<Delivery>, ConsumeError> {
        Ok(None)
    }
}

/// Starts a worker on `source`; the caller cancels the token returned to stop it.
fn start(source: EndsAfter, dir: &TempDir) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let publisher: Arc<dyn Publisher> = Arc::new(EmbeddedQueue::open(&dir.0, 20).unwrap());
    let api = ApiSettings::new("http://127.0.0.1:9".parse().unwrap(), SecretString::from("key"), "ws", "PROJECT");
    let shutdown = CancellationToken::new();
    let worker = Worker::new(&WorkerSettings::new(api), publisher, Metrics::isolated(), shutdown.clone()).unwrap();
    (shutdown, tokio::spawn(Arc::new(worker).run(Arc::new(source))))
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_ends_soon_after_it_is_opened_is_reopened_at_the_reconnect_pace() {
    let dir = TempDir::new("relay-worker");
    let (opens, mut opened) = watch::channel(0);
    let started = Instant::now();
    // As long as an embedded store's look waits for a lock another process holds.
    let lived = Duration::from_secs(5);
    let (shutdown, running) = start(EndsAfter { after: lived, opens }, &dir);

    opened.wait_for(|opens| *opens >= 4).await.unwrap();
    // Three lives and three waits between four opens, each wait at least half its ceiling (the
    // jitter's floor).
    let floor: Duration = lived * 3 + (1..=3).map(|failures| RECONNECT.ceiling(failures) / 2).sum::<Duration>();
    assert!(started.elapsed() >= floor, "reopened after {:?}, under {floor:?}", started.elapsed());
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_ran_a_while_is_reopened_at_once() {
    let dir = TempDir::new("relay-worker");
    let (opens, mut opened) = watch::channel(0);
    let started = Instant::now();
    let lived = ENDED_SOON * 2;
    let (shutdown, running) = start(EndsAfter { after: lived, opens }, &dir);

    opened.wait_for(|opens| *opens >= 3).await.unwrap();
    // Two consumers' lives, and no wait between them (the shortest would be half the first's).
    assert!(started.elapsed() < lived * 2 + RECONNECT.ceiling(1) / 2, "{:?}", started.elapsed());
    shutdown.cancel();
    running.await.unwrap();
}
