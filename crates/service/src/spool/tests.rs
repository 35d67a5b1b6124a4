use std::{collections::BTreeMap, os::unix::fs::PermissionsExt, sync::Mutex, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    queue::{embedded::failed_write::UNREADY_AFTER_FAILED_WRITE, Destination, PublishError, Publisher},
    telemetry::captured::Lines,
    temp_dir::TempDir,
};

/// A directory of the test's own.
fn temp_dir() -> TempDir {
    TempDir::new("relay-spool")
}

fn settings(dir: &TempDir, max_bytes: u64) -> SpoolSettings {
    SpoolSettings { dir: dir.0.join("spool"), max_bytes }
}

fn message(id: &str) -> Message {
    Message {
        body: Bytes::from(format!(r#"{{"type":"conversation.completed","id":"{id}"}}"#)),
        message_id: id.into(),
        event_type: "conversation.completed".into(),
        timestamp: 1_795_000_000,
        headers: BTreeMap::from([("x-relay-signature-scheme".to_owned(), "timestamped".to_owned())]),
    }
}

/// A broker that confirms, refuses, or is away, as the test says.
struct FakeBroker {
    published: Mutex<Vec<Message>>,
    /// Every publish it was offered, confirmed or not.
    offered: watch::Sender<usize>,
    /// False while the broker is away; the drainer waits on it as on a real broker's readiness.
    ready: watch::Sender<bool>,
    /// Every event whose id starts with this is nacked.
    nack_prefix: Mutex<Option<String>>,
    /// Events whose publish fails once as a lost connection's would, the broker staying ready.
    lost_once: Mutex<std::collections::BTreeSet<String>>,
    /// Events whose confirm never comes in time.
    never_confirmed: Mutex<std::collections::BTreeSet<String>>,
}

impl Default for FakeBroker {
    fn default() -> Self {
        Self {
            published: Mutex::default(),
            offered: watch::Sender::new(0),
            ready: watch::Sender::new(true),
            nack_prefix: Mutex::default(),
            lost_once: Mutex::default(),
            never_confirmed: Mutex::default(),
        }
    }
}

#[async_trait]
impl Publisher for FakeBroker {
    async fn publish(&self, to: Destination, message: Message) -> Result<(), PublishError> {
        assert_eq!(to, Destination::Events);
        self.offered.send_modify(|offered| *offered += 1);
        if !*self.ready.borrow() {
            return Err(PublishError::Unavailable);
        }
        if self.nack_prefix.lock().unwrap().as_deref().is_some_and(|prefix| message.message_id.starts_with(prefix)) {
            return Err(PublishError::Nacked);
        }
        if self.lost_once.lock().unwrap().remove(&message.message_id) {
            return Err(PublishError::Unavailable);
        }
        if self.never_confirmed.lock().unwrap().contains(&message.message_id) {
            return Err(PublishError::Timeout);
        }
        self.published.lock().unwrap().push(message);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }
}

impl FakeBroker {
    fn ids(&self) -> Vec<String> {
        self.published.lock().unwrap().iter().map(|m| m.message_id.clone()).collect()
    }
}

/// Waits until the spool holds `events`, as its drainer and `/readyz` are told.
async fn wait_for_events(spool: &Spool, events: u64) {
    let mut level = spool.level();
    let reached = tokio::time::timeout(Duration::from_secs(10), level.wait_for(|l| l.events == events)).await.is_ok();
    assert!(reached, "the spool holds {}, never {events}", spool.events());
}

#[tokio::test]
async fn spooled_events_come_back_whole_and_oldest_first_after_a_reopen() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    for i in 0..5 {
        spool.put(message(&format!("evt-{i}"))).await.unwrap();
    }
    let bytes = spool.inner.bytes.load(Ordering::SeqCst);
    drop(spool);

    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    assert_eq!(spool.events(), 5);
    assert_eq!(spool.inner.bytes.load(Ordering::SeqCst), bytes, "the byte count read back equals the one kept");
    let oldest = spool.oldest(0, 3, u64::MAX).await.unwrap();
    let ids: Vec<_> = oldest.iter().map(|s| s.message.message_id.as_str()).collect();
    assert_eq!(ids, ["evt-0", "evt-1", "evt-2"]);
    assert_eq!(oldest[0].message, message("evt-0"), "body, id, type, timestamp and headers kept");
    let one = stored_size(&message("evt-0"));
    assert_eq!(spool.oldest(0, 5, one + 1).await.unwrap().len(), 2, "a batch stops at its byte limit");
    assert_eq!(spool.oldest(0, 5, 1).await.unwrap().len(), 1, "and holds at least one event");
}

#[tokio::test]
async fn a_full_spool_refuses_and_accepts_again_once_drained() {
    let dir = temp_dir();
    let one = stored_size(&message("evt-0"));
    let spool = Spool::open(&settings(&dir, one * 2), Metrics::isolated()).unwrap();
    spool.put(message("evt-0")).await.unwrap();
    spool.put(message("evt-1")).await.unwrap();
    assert!(!spool.accepts());
    assert!(matches!(spool.put(message("evt-2")).await, Err(SpoolError::Full { .. })));
    assert_eq!(spool.events(), 2);

    let seq = spool.oldest(0, 1, u64::MAX).await.unwrap()[0].seq;
    spool.remove(&[(seq, one)]).await.unwrap();
    assert!(spool.accepts());
    spool.put(message("evt-2")).await.unwrap();
}

#[tokio::test]
async fn what_waits_on_the_spool_hears_when_an_event_finds_no_room_and_when_room_is_made() {
    let dir = temp_dir();
    let one = stored_size(&message("evt-0"));
    // Room for two events and a little: a third does not fit, though the spool is below its cap.
    let spool = Spool::open(&settings(&dir, one * 2 + 1), Metrics::isolated()).unwrap();
    spool.put(message("evt-0")).await.unwrap();
    spool.put(message("evt-1")).await.unwrap();
    let mut level = spool.level();
    assert_eq!(*level.borrow_and_update(), Level { events: 2, accepts: true });
    assert!(matches!(spool.put(message("evt-2")).await, Err(SpoolError::Full { .. })));
    assert!(level.has_changed().unwrap(), "woken: `/readyz` turns unready");
    assert_eq!(*level.borrow_and_update(), Level { events: 2, accepts: false });

    let seq = spool.oldest(0, 1, u64::MAX).await.unwrap()[0].seq;
    spool.remove(&[(seq, one)]).await.unwrap();
    assert_eq!(*level.borrow_and_update(), Level { events: 1, accepts: true });
}

#[tokio::test]
async fn the_spool_directory_and_its_files_are_owner_only() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    spool.put(message("evt-0")).await.unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(spool.dir()), 0o700);
    let files: Vec<_> = std::fs::read_dir(spool.dir()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.iter().any(|f| f.ends_with("queue.sqlite3-wal")), "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_second_owner_of_the_same_spool_is_refused() {
    let dir = temp_dir();
    let _first = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    let error = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).err().expect("refused").to_string();
    assert!(error.contains("in use by another process"), "{error}");
}

#[tokio::test]
async fn the_drainer_waits_for_the_broker_then_forwards_oldest_first_and_empties_the_spool() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    let broker = Arc::new(FakeBroker::default());
    broker.ready.send_replace(false);
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());

    let ids: Vec<String> = (0..150).map(|i| format!("evt-{i:03}")).collect();
    for id in &ids {
        spool.put(message(id)).await.unwrap();
    }
    assert!(broker.ids().is_empty(), "nothing is sent while the broker is away");
    assert_eq!(spool.events(), 150);

    broker.ready.send_replace(true);
    wait_for_events(&spool, 0).await;
    assert_eq!(broker.ids(), ids, "forwarded once each, oldest first");
    assert_eq!(spool.oldest(0, 1, u64::MAX).await.unwrap().len(), 0);

    spool.put(message("evt-late")).await.unwrap();
    wait_for_events(&spool, 0).await;
    assert_eq!(broker.ids().len(), 151, "a new event is forwarded");
    shutdown.cancel();
    drainer.await.unwrap();
}

/// Unready, a receiver gets no webhooks whose writes could show the disk works again: it is
/// ready again after a while, and the next webhook tries.
#[tokio::test(start_paused = true)]
async fn a_failed_write_makes_the_spool_refuse_until_a_wait_is_over_with_no_write_since() {
    let dir = temp_dir();
    let settings = settings(&dir, 1 << 20);
    let spool = Spool::open(&settings, Metrics::isolated()).unwrap();
    let disk = rusqlite::Connection::open(settings.dir.join(STORE_FILES[0])).unwrap();
    disk.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
        .unwrap();
    assert!(matches!(spool.put(message("evt-0")).await, Err(SpoolError::Storage(_))));
    assert!(!spool.accepts(), "unready after the failure");
    let mut level = spool.level();
    assert!(!level.borrow_and_update().accepts);

    disk.execute_batch("DROP TRIGGER refuse").unwrap();
    tokio::time::advance(UNREADY_AFTER_FAILED_WRITE - Duration::from_secs(1)).await;
    assert!(!spool.accepts(), "still, until the wait is over");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(spool.accepts(), "then tried again");
    level.wait_for(|level| level.accepts).await.unwrap();
    spool.put(message("evt-1")).await.unwrap();
    assert_eq!(spool.events(), 1);
}

#[tokio::test]
async fn events_confirmed_that_the_spool_cannot_remove_are_not_sent_again() {
    let dir = temp_dir();
    let settings = settings(&dir, 1 << 20);
    let metrics = Metrics::isolated();
    let spool = Spool::open(&settings, metrics.clone()).unwrap();
    assert!(metrics.render().contains(r#"relay_spool_failures_total{step="remove"} 0"#), "counted from the start");
    for i in 0..3 {
        spool.put(message(&format!("evt-{i}"))).await.unwrap();
    }
    // The disk refuses deletes (gone read-only, say) and still reads.
    let disk = rusqlite::Connection::open(settings.dir.join(STORE_FILES[0])).unwrap();
    disk.execute_batch("CREATE TRIGGER refuse BEFORE DELETE ON messages BEGIN SELECT RAISE(ABORT, 'read-only'); END;")
        .unwrap();
    let broker = Arc::new(FakeBroker::default());
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());

    // Two removals refused: the first after the batch was confirmed, then one tried again.
    let refused = r#"relay_spool_failures_total{step="remove"} 2"#;
    let counted =
        tokio::time::timeout(Duration::from_secs(30), metrics.wait_until(|text| text.contains(refused))).await;
    assert!(counted.is_ok(), "{}", metrics.render());
    assert_eq!(*broker.offered.borrow(), 3, "each event offered once, not again while it cannot be removed");
    assert_eq!(spool.events(), 3);

    disk.execute_batch("DROP TRIGGER refuse").unwrap();
    wait_for_events(&spool, 0).await;
    assert_eq!(broker.ids(), ["evt-0", "evt-1", "evt-2"], "each once");
    shutdown.cancel();
    drainer.await.unwrap();
}

#[tokio::test]
async fn an_event_the_broker_refuses_stays_spooled_and_the_others_go() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    let broker = Arc::new(FakeBroker::default());
    *broker.nack_prefix.lock().unwrap() = Some("evt-1".into());
    for i in 0..3 {
        spool.put(message(&format!("evt-{i}"))).await.unwrap();
    }
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());
    wait_for_events(&spool, 1).await;
    assert_eq!(broker.ids(), ["evt-0", "evt-2"]);
    assert_eq!(spool.oldest(0, 5, u64::MAX).await.unwrap()[0].message.message_id, "evt-1");

    *broker.nack_prefix.lock().unwrap() = None;
    wait_for_events(&spool, 0).await;
    assert_eq!(broker.ids(), ["evt-0", "evt-2", "evt-1"]);
    shutdown.cancel();
    drainer.await.unwrap();
}

/// A connection lost with half a batch unconfirmed: those go next, not after the rest of the
/// spool (which could be hours of events behind them).
#[tokio::test]
async fn events_a_lost_connection_left_unconfirmed_go_before_the_ones_behind_them() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    let broker = Arc::new(FakeBroker::default());
    let ids: Vec<String> = (0..200).map(|i| format!("evt-{i:03}")).collect();
    for id in &ids {
        spool.put(message(id)).await.unwrap();
    }
    broker.lost_once.lock().unwrap().extend(ids[31..64].iter().cloned());
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());
    wait_for_events(&spool, 0).await;
    assert_eq!(broker.ids(), ids, "oldest first");
    shutdown.cancel();
    drainer.await.unwrap();
}

/// A batch whose confirms never come in time is tried a few times first, then passed over: were
/// it the start of every batch, the rest of the spool would never go.
#[tokio::test]
async fn events_never_confirmed_in_time_do_not_hold_back_the_rest_for_ever() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    let broker = Arc::new(FakeBroker::default());
    let ids: Vec<String> = (0..100).map(|i| format!("evt-{i:03}")).collect();
    for id in &ids {
        spool.put(message(id)).await.unwrap();
    }
    // A whole batch: the events behind it are in no batch until the drainer goes past it.
    broker.never_confirmed.lock().unwrap().extend(ids[..super::drain::BATCH].iter().cloned());
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());
    wait_for_events(&spool, super::drain::BATCH as u64).await;
    assert_eq!(broker.ids(), ids[super::drain::BATCH..], "the others, oldest first");
    assert_eq!(spool.oldest(0, 1, u64::MAX).await.unwrap()[0].message.message_id, "evt-000", "kept");
    shutdown.cancel();
    drainer.await.unwrap();
}

#[tokio::test]
async fn an_event_the_broker_goes_on_refusing_is_warned_of_once_per_interval_not_every_pass() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt().with_writer(lines.clone()).with_ansi(false).finish();
    // The test's runtime runs on this thread, and the drainer with it.
    let _logging = tracing::subscriber::set_default(subscriber);
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    let broker = Arc::new(FakeBroker::default());
    *broker.nack_prefix.lock().unwrap() = Some("refused-".into());
    spool.put(message("refused-0")).await.unwrap();
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());
    let mut offered = broker.offered.subscribe();
    let three = tokio::time::timeout(Duration::from_secs(20), offered.wait_for(|n| *n >= 3)).await;
    assert!(three.is_ok(), "offered again and again");
    shutdown.cancel();
    drainer.await.unwrap();
    let logged = lines.text();
    let warned = logged.lines().filter(|line| line.contains("a spooled event was not confirmed")).count();
    assert_eq!(warned, 1, "{logged}");
    assert_eq!(spool.events(), 1, "kept");
}

#[tokio::test]
async fn a_batch_of_events_the_broker_refuses_does_not_hold_back_the_events_behind_it() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    let broker = Arc::new(FakeBroker::default());
    // A type no longer bound, say: the broker refuses a whole batch's worth at the head.
    *broker.nack_prefix.lock().unwrap() = Some("refused-".into());
    for i in 0..super::drain::BATCH {
        spool.put(message(&format!("refused-{i}"))).await.unwrap();
    }
    spool.put(message("evt-behind")).await.unwrap();
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());
    wait_for_events(&spool, super::drain::BATCH as u64).await;
    assert_eq!(broker.ids(), ["evt-behind"]);

    *broker.nack_prefix.lock().unwrap() = None;
    wait_for_events(&spool, 0).await;
    assert_eq!(broker.ids().len(), super::drain::BATCH + 1, "the refused go once the broker takes them");
    shutdown.cancel();
    drainer.await.unwrap();
}

#[tokio::test]
async fn an_event_whose_caller_stopped_waiting_is_still_counted_and_drained() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    // The receiver's deadline runs out while the write is under way: the write still commits.
    let _ = tokio::time::timeout(Duration::ZERO, spool.put(message("evt-late"))).await;
    wait_for_events(&spool, 1).await;

    let broker = Arc::new(FakeBroker::default());
    let shutdown = CancellationToken::new();
    let drainer = tokio::spawn(Drainer::new(spool.clone(), broker.clone(), shutdown.clone()).run());
    wait_for_events(&spool, 0).await;
    assert_eq!(broker.ids(), ["evt-late"]);
    shutdown.cancel();
    drainer.await.unwrap();
}

/// The drainer can read an event the moment its write commits, before the write has counted it:
/// the removal waits for that count instead of taking the count below zero.
#[tokio::test]
#[allow(clippy::await_holding_lock, reason = "the guard is a write paused between its commit and its count")]
async fn a_removal_racing_a_write_is_counted_after_the_write() {
    let dir = temp_dir();
    let spool = Spool::open(&settings(&dir, 1 << 20), Metrics::isolated()).unwrap();
    spool.put(message("evt-0")).await.unwrap();
    // What `put` does for evt-1, paused after the commit.
    let size = stored_size(&message("evt-1"));
    spool.inner.bytes.fetch_add(size, Ordering::SeqCst);
    let counting = spool.inner.counting();
    spool.inner.store.insert(&message("evt-1"), 0).unwrap();

    let batch = spool.oldest(0, 2, u64::MAX).await.unwrap();
    assert_eq!(batch.len(), 2, "the drainer sees the committed write");
    let confirmed: Vec<_> = batch.iter().map(|stored| (stored.seq, stored_size(&stored.message))).collect();
    let mut removal = tokio::spawn({
        let spool = spool.clone();
        async move { spool.remove(&confirmed).await }
    });
    // A negative, so bounded by a short wait.
    let early = tokio::time::timeout(Duration::from_millis(200), &mut removal).await;
    assert!(early.is_err(), "the removal was counted before the write it removes: {early:?}");

    spool.inner.update(|events| *events += 1);
    drop(counting);
    removal.await.unwrap().unwrap();
    assert_eq!(spool.events(), 0);
    assert_eq!(spool.inner.bytes.load(Ordering::SeqCst), 0);
}
