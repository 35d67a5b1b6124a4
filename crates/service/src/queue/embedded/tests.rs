use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures_util::FutureExt;

use super::*;
use crate::temp_dir::TempDir;

/// A directory of the test's own.
fn temp_dir() -> TempDir {
    TempDir::new("relay-embedded")
}

fn message(id: &str) -> Message {
    Message {
        body: Bytes::from_static(br#"{"type":"conversation.completed"}"#),
        message_id: id.into(),
        event_type: "conversation.completed".into(),
        timestamp: 1,
        headers: BTreeMap::from([(headers::ATTEMPTS.to_owned(), "2".to_owned())]),
    }
}

#[tokio::test]
async fn a_published_event_is_delivered_with_its_properties_and_gone_once_acked() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    queue.publish(Destination::Events, message("evt_1")).await.unwrap();
    let mut consumer = Source::open(&queue, 1).await.unwrap();
    let delivery = consumer.next().await.unwrap();
    assert_eq!(delivery.message, message("evt_1"));
    assert!(!delivery.redelivered);
    delivery.acker.ack().await.unwrap();
    assert_eq!(queue.pending().await.unwrap(), 0);
}

#[tokio::test]
async fn leases_of_a_process_that_died_are_released_on_the_next_open() {
    let dir = temp_dir();
    {
        std::fs::create_dir_all(&dir.0).unwrap();
        let store = Store::open(&dir.0).unwrap();
        store.insert(&message("evt_1"), 0).unwrap();
        // Leased, then the process dies: neither settled nor released.
        assert!(store.lease_next(1).unwrap().is_some());
    }
    let reopened = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let delivery = Source::open(&reopened, 1).await.unwrap().next().await.unwrap();
    assert_eq!(delivery.message.message_id, "evt_1");
    assert!(delivery.redelivered);
}

#[tokio::test]
async fn a_message_past_its_delivery_limit_goes_to_the_dead_letter_file() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 2).unwrap();
    queue.publish(Destination::Events, message("evt_poison")).await.unwrap();
    queue.publish(Destination::Events, message("evt_fine")).await.unwrap();
    for _ in 0..2 {
        let mut consumer = Source::open(&queue, 1).await.unwrap();
        let delivery = consumer.next().await.unwrap();
        assert_eq!(delivery.message.message_id, "evt_poison");
        drop(delivery);
        // Dropping the consumer gives the unsettled message back. Inside the runtime that happens
        // on a blocking thread, in its own time, and the next consumer could be served
        // `evt_fine` first; dropped on a thread of its own, outside the runtime, it is given back
        // before the drop returns.
        std::thread::spawn(move || drop(consumer)).join().unwrap();
    }
    let mut consumer = Source::open(&queue, 1).await.unwrap();
    assert_eq!(consumer.next().await.unwrap().message.message_id, "evt_fine");
    let dead = std::fs::read_to_string(dir.0.join(DEAD_FILE)).unwrap();
    let line: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(line["event_id"], "evt_poison");
    assert!(line["error"].as_str().unwrap().contains("delivered 2 times"));
}

/// Starts a look for a due message that waits on the store, held by the guard returned, and
/// stops waiting for it (as the worker does when its projects are paused) before the look takes
/// its lease.
fn abandon_a_look<'a>(
    queue: &'a EmbeddedQueue,
    consumer: &mut Box<dyn Consumer>,
) -> std::sync::MutexGuard<'a, rusqlite::Connection> {
    let busy = queue.shared.store.busy();
    // Polled once, then dropped.
    assert!(consumer.next().now_or_never().is_none(), "the look waits for the store");
    busy
}

/// Waits until the look [`abandon_a_look`] left has had its turn at the store, once its guard
/// is dropped: its message is delivered once. A look started before that could take the message
/// itself and hide what became of the first one's lease. (A blocking thread of its own, so no
/// step to drive: looked at until then.)
async fn until_the_abandoned_look_leased(queue: &EmbeddedQueue) {
    let leased = async {
        while queue.shared.store.deliveries().unwrap() != [1] {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), leased).await.expect("the abandoned look ran");
}

/// The next message `consumer` hands out; the look ends within a bound, not a clock.
async fn next_within_a_bound(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the message is handed out, not left leased to no one")
        .expect("a delivery")
}

#[tokio::test]
async fn a_look_its_caller_stopped_waiting_for_hands_its_message_to_the_next_look() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    queue.publish(Destination::Events, message("evt_1")).await.unwrap();
    let mut consumer = Source::open(&queue, 1).await.unwrap();
    drop(abandon_a_look(&queue, &mut consumer));
    until_the_abandoned_look_leased(&queue).await;
    assert_eq!(next_within_a_bound(&mut consumer).await.message.message_id, "evt_1");
}

#[tokio::test]
async fn a_message_leased_by_a_look_of_a_consumer_dropped_meanwhile_goes_back() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    queue.publish(Destination::Events, message("evt_1")).await.unwrap();
    let mut consumer = Source::open(&queue, 1).await.unwrap();
    // The look is still waiting on the store when its consumer goes, holding nothing yet.
    let busy = abandon_a_look(&queue, &mut consumer);
    drop(consumer);
    drop(busy);
    until_the_abandoned_look_leased(&queue).await;
    let mut next = Source::open(&queue, 1).await.unwrap();
    assert_eq!(next_within_a_bound(&mut next).await.message.message_id, "evt_1");
}

/// Unready, the queue gets no webhooks and its worker takes no events: no write could show the
/// disk works again. It is ready again after a while, and the next write tries.
#[tokio::test(start_paused = true)]
async fn a_failed_write_makes_the_queue_unready_until_a_wait_is_over_with_no_write_since() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let disk = rusqlite::Connection::open(dir.0.join("queue.sqlite3")).unwrap();
    disk.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
        .unwrap();
    assert!(queue.publish(Destination::Events, message("evt_0")).await.is_err());
    assert!(!queue.is_ready(), "unready after the failure");
    let mut readiness = queue.readiness();
    assert!(!*readiness.borrow_and_update());

    disk.execute_batch("DROP TRIGGER refuse").unwrap();
    tokio::time::advance(failed_write::UNREADY_AFTER_FAILED_WRITE - Duration::from_secs(1)).await;
    assert!(!queue.is_ready(), "still, until the wait is over");
    let ready = tokio::time::timeout(Duration::from_secs(2), readiness.wait_for(|ready| *ready)).await;
    assert!(ready.is_ok_and(|r| r.is_ok()), "ready again once the wait is over");
    queue.publish(Destination::Events, message("evt_1")).await.unwrap();
    assert_eq!(queue.pending().await.unwrap(), 1);
}

#[tokio::test]
async fn a_message_arriving_after_an_abandoned_look_found_nothing_is_handed_out() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let mut consumer = EmbeddedConsumer::new(queue.clone());
    let busy = queue.shared.store.busy();
    assert!(Consumer::next(&mut consumer).now_or_never().is_none(), "the look waits for the store");
    drop(busy);
    let finished = async {
        while !consumer.look.as_ref().is_some_and(|look| look.is_finished()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), finished).await.expect("the look found nothing");

    // Inserted after that look, and before the next call listens for arrivals.
    queue.publish(Destination::Events, message("evt_1")).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), Consumer::next(&mut consumer)).await;
    assert_eq!(delivery.expect("handed out").expect("a delivery").message.message_id, "evt_1");
}

#[tokio::test(start_paused = true)]
async fn a_retry_falls_due_when_its_delay_has_passed_and_not_before() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open_with_clock(&dir.0, 20, Clock::tokio()).unwrap();
    queue.publish(Destination::Retry { delay: Duration::from_secs(300) }, message("evt_later")).await.unwrap();
    assert!(queue.get().await.unwrap().is_none(), "not due at once");
    tokio::time::advance(Duration::from_millis(299_999)).await;
    assert!(queue.get().await.unwrap().is_none(), "not due a millisecond early");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(queue.get().await.unwrap().expect("due").message.message_id, "evt_later");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_consumer_wakes_when_a_retry_falls_due() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open_with_clock(&dir.0, 20, Clock::tokio()).unwrap();
    // Timed from before the publish: the delay runs from when the publish stored it.
    let started = tokio::time::Instant::now();
    queue.publish(Destination::Retry { delay: Duration::from_secs(5) }, message("evt_later")).await.unwrap();
    // Paused time runs forward only while everything waits: the consumer's own sleep moves it.
    let delivery = Source::open(&queue, 1).await.unwrap().next().await.unwrap();
    assert_eq!(delivery.message.message_id, "evt_later");
    assert!(started.elapsed() >= Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_message_got_and_dropped_unsettled_goes_back() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    queue.publish(Destination::Events, message("evt_1")).await.unwrap();
    let delivery = queue.get().await.unwrap().expect("ready");
    assert!(queue.get().await.unwrap().is_none(), "leased while held");
    drop(delivery);
    let mut consumer = Source::open(&queue, 1).await.unwrap();
    let again = consumer.next().await.expect("given back");
    assert!(again.redelivered);
}

#[test]
fn a_second_owner_of_the_same_directory_is_refused() {
    let dir = temp_dir();
    let _first = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let second = EmbeddedQueue::open(&dir.0, 20).err().unwrap();
    assert!(matches!(second, OpenError::InUse { .. }), "{second}");
    assert!(second.to_string().starts_with("RELAY_DATA_DIR"), "{second}");
}

#[test]
fn a_torn_last_line_is_ended_before_the_next_record() {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join(CONVERSATIONS_FILE);
    std::fs::write(&path, "{\"whole\":1}\n{\"torn\":").unwrap();
    JsonLines::open(&path, watch::Sender::new(0)).unwrap().append(b"{\"next\":2}").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().last().unwrap(), "{\"next\":2}");
}

#[tokio::test]
async fn each_record_and_dead_letter_is_announced_once_it_is_on_disk() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let mut written = queue.written();
    let lines = |name: &str| std::fs::read_to_string(dir.0.join(name)).unwrap().lines().count();
    queue.publish(Destination::Events, message("evt_1")).await.unwrap();
    assert!(!written.has_changed().unwrap(), "a raw event is not an output line");
    queue
        .publish(Destination::Conversations, Message { body: Bytes::from_static(b"{}"), ..message("evt_1") })
        .await
        .unwrap();
    assert!(written.has_changed().unwrap());
    assert_eq!((*written.borrow_and_update(), lines(CONVERSATIONS_FILE)), (1, 1), "announced when it can be read");
    queue.publish(Destination::Dead, message("evt_2")).await.unwrap();
    assert_eq!((*written.borrow_and_update(), lines(DEAD_FILE)), (2, 1));
}

#[tokio::test]
async fn accepted_events_and_records_make_their_conversation_known_and_retries_do_not_add_any() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let event = |conversation: &str| Message {
        body: Bytes::from(format!(
            r#"{{"type":"conversation.completed","data":{{"conversation_id":"{conversation}"}}}}"#
        )),
        ..message("evt")
    };
    queue.publish(Destination::Events, event("CAevent")).await.unwrap();
    queue.publish(Destination::Retry { delay: Duration::from_secs(60) }, event("CAretry")).await.unwrap();
    let record = Message {
        body: Bytes::from_static(
            br#"{"event":{"data":{"conversation_id":"CArecord"}},"conversation":{"id":"CArecord"}}"#,
        ),
        ..message("evt")
    };
    queue.publish(Destination::Conversations, record).await.unwrap();
    let known = queue.known_conversations(UNIX_EPOCH).await.unwrap();
    assert_eq!(known, HashSet::from(["CAevent".to_owned(), "CArecord".to_owned()]));
}

#[test]
fn the_ledger_forgets_what_is_past_retention() {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir.0).unwrap();
    let store = Store::open(&dir.0).unwrap();
    store.note_known("CAold", 1_000).unwrap();
    store.note_known("CAnew", 5_000).unwrap();
    store.forget_known_before(2_000).unwrap();
    assert_eq!(store.known_since(0).unwrap(), HashSet::from(["CAnew".to_owned()]));
    assert!(store.known_since(6_000).unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_letter_line_torn_inside_a_character_hides_no_other_dead_letter() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    queue.publish(Destination::Dead, message("evt_before")).await.unwrap();
    // What a full disk could leave before the fix: part of a line, cut inside "ë".
    let mut file = std::fs::OpenOptions::new().append(true).open(dir.0.join(DEAD_FILE)).unwrap();
    std::io::Write::write_all(&mut file, b"{\"event_id\":\"evt_torn\",\"caller\":\"Zo\xc3\n").unwrap();
    queue.publish(Destination::Dead, message("evt_after")).await.unwrap();

    let listed = EmbeddedQueue::dead_letters_in(&dir.0).unwrap();
    let ids: Vec<&str> = listed.iter().map(|line| line.message.message_id.as_str()).collect();
    assert_eq!(ids, ["evt_before", "evt_after"]);
    // A replay removes the letters it took by line number, and keeps the torn line as it was.
    queue.remove_dead_lines(HashSet::from([listed[1].index])).await.unwrap();
    let left = std::fs::read(dir.0.join(DEAD_FILE)).unwrap();
    assert!(left.ends_with(b"\"Zo\xc3\n"), "{}", String::from_utf8_lossy(&left));
    assert_eq!(EmbeddedQueue::dead_letters_in(&dir.0).unwrap()[0].message.message_id, "evt_before");
}

#[tokio::test]
async fn a_dead_letter_keeps_the_event_byte_for_byte() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let bodies: [&[u8]; 3] = [
        // Keys out of order, a trailing zero, an integer past u64 and f64: what a `Value` rewrites.
        br#"{"type":"conversation.completed","zeta":1.50,"data":{"conversation_id":"CA1"},"alpha":12345678901234567890123}"#,
        // Spread over lines: kept as text, so the dead letter is still one line.
        b"{\n  \"type\": \"conversation.completed\",\n  \"n\": 1e2\n}\n",
        b"not JSON",
    ];
    for body in bodies {
        queue.publish(Destination::Dead, Message { body: Bytes::from_static(body), ..message("evt") }).await.unwrap();
    }
    let dead = EmbeddedQueue::dead_letters_in(&dir.0).unwrap();
    let text = |body: &[u8]| String::from_utf8_lossy(body).into_owned();
    let read: Vec<String> = dead.iter().map(|line| text(&line.message.body)).collect();
    assert_eq!(read, bodies.map(text));
    assert_eq!(std::fs::read_to_string(dir.0.join(DEAD_FILE)).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn a_ledger_prune_that_fails_does_not_fail_the_write_it_follows() {
    let dir = temp_dir();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    // A conversation long past retention, which the prune will try to forget; and from now on
    // forgetting fails, while storing goes on as before.
    let sqlite = rusqlite::Connection::open(dir.0.join(store::FILE)).unwrap();
    sqlite
        .execute_batch(
            "INSERT INTO ledger (conversation_id, seen_at) VALUES ('CAold', 0);
             CREATE TRIGGER no_forgetting BEFORE DELETE ON ledger BEGIN SELECT RAISE(FAIL, 'disk trouble'); END;",
        )
        .unwrap();
    // The next ledger write is the one that prunes.
    queue.shared.ledger_writes.store(LEDGER_PRUNE_EVERY - 1, Ordering::Relaxed);
    let mut event = message("evt_prune");
    event.body = Bytes::from_static(br#"{"type":"conversation.completed","data":{"conversation_id":"CAprune"}}"#);
    queue.publish(Destination::Events, event).await.expect("stored: the prune's failure is not the write's");
    assert_eq!(queue.pending().await.unwrap(), 1, "stored once");
    let mut ledger = sqlite.prepare("SELECT conversation_id FROM ledger ORDER BY seen_at").unwrap();
    let known: Vec<String> = ledger.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(known, ["CAold", "CAprune"], "known, and nothing forgotten: the prune failed");
}
