//! `log replay`: events the conversations log holds that never became a record go back to the
//! worker with their own ids; enriched ones are left alone.

use std::time::Duration;

use lapin::{
    options::{BasicGetOptions, BasicNackOptions, QueueBindOptions},
    types::{AMQPValue, FieldTable},
    Connection, ConnectionProperties,
};
use polyai_relay::{
    config::EventTypes,
    queue::{amqp::exclusive, headers},
};

use crate::{
    backend::{Backend, TestQueue},
    broker::amqp_url,
    fake_polyai::FakePolyai,
    helpers::{completed, http, post_event},
    process::{as_refs, run_to_exit, run_to_exit_with_stdout, RelayProcess},
};

const TYPE: &str = "conversation.completed";

/// A relay (`run`) whose worker's queue missed one accepted event: `evt-kept` was enriched,
/// `evt-lost` was answered 204 while the queue was not bound, so it is only in the log.
async fn relay_that_missed_an_event() -> (TestQueue, RelayProcess, FakePolyai) {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::Only(vec![TYPE.into()])).await;
    let polyai = FakePolyai::start().await;
    let relay = RelayProcess::spawn(&["run"], &as_refs(&queue.relay_env(&polyai.base_url, &[]))).await;
    relay.wait_ready().await;
    post(&relay, "evt-kept").await;
    assert_eq!(queue.next_record().await.json["event_id"], "evt-kept");

    let broker = queue.broker();
    let (enrich, events) = (broker.topology.enrich_queue.as_str(), broker.topology.events_exchange.as_str());
    let channel = broker.channel().await;
    channel.queue_unbind(enrich.into(), events.into(), TYPE.into(), FieldTable::default()).await.unwrap();
    post(&relay, "evt-lost").await;
    let bind = QueueBindOptions::default();
    channel.queue_bind(enrich.into(), events.into(), TYPE.into(), bind, FieldTable::default()).await.unwrap();
    (queue, relay, polyai)
}

async fn post(relay: &RelayProcess, id: &str) {
    let (_, status) = post_event(&http(), &relay.url("/polyai-events"), id.into()).await;
    assert_eq!(status, Some(204), "{}", relay.logs());
}

async fn log_replay(queue: &TestQueue, args: &[&str]) -> String {
    let args: Vec<&str> = ["log", "replay"].iter().chain(args).copied().collect();
    let (code, stdout, stderr) = run_to_exit_with_stdout(&args, &as_refs(&queue.env())).await;
    assert_eq!(code, Some(0), "{stderr}");
    stdout
}

#[tokio::test]
async fn an_accepted_event_the_worker_never_got_is_replayed_once_with_its_own_id() {
    let (queue, mut relay, polyai) = relay_that_missed_an_event().await;

    let listed = log_replay(&queue, &["--since", "10m", "--dry-run"]).await;
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["would replay evt-lost conversation.completed CAevt-lost", "would replay 1, already enriched 1"]
    );

    // With the worker stopped, the copy put back can be looked at before it is enriched.
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(15)).await, Some(0), "{}", relay.logs());
    let replayed = log_replay(&queue, &["--since", "10m", "--reason", "queue unbound"]).await;
    assert_eq!(replayed.trim(), "replayed 1, already enriched 1");
    let broker = queue.broker();
    let channel = broker.channel().await;
    let enrich = broker.topology.enrich_queue.as_str();
    let copy = channel.basic_get(enrich.into(), BasicGetOptions::default()).await.unwrap().expect("the copy").delivery;
    let header = |name: &str| copy.properties.headers().as_ref().and_then(|h| h.inner().get(name).cloned());
    assert_eq!(copy.properties.message_id().as_ref().map(|id| id.as_str()), Some("evt-lost"));
    assert_eq!(copy.data, completed("CAevt-lost").as_bytes(), "the webhook's body as it came");
    assert!(header(headers::REPLAYED_AT).is_some());
    assert_eq!(header(headers::REPLAY_REASON), Some(AMQPValue::LongString("queue unbound".into())));
    assert!(header(headers::RECEIVED_AT).is_some(), "the event's own headers stay");
    assert_eq!(header("x-stream-offset"), None, "what the stream adds is not the event's");
    copy.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();

    let _relay = RelayProcess::spawn(&["run"], &as_refs(&queue.relay_env(&polyai.base_url, &[]))).await;
    let record = queue.next_record().await;
    assert_eq!(record.json["event_id"], "evt-lost", "the event's own id, so a copy is one consumers dedupe");
    assert_eq!(record.json["event_type"], TYPE);

    // Now both have records: nothing is sent again.
    let again = log_replay(&queue, &["--since", "10m"]).await;
    assert_eq!(again.trim(), "replayed 0, already enriched 2");
}

#[tokio::test]
async fn events_taken_after_the_window_are_left() {
    let (queue, _relay, _polyai) = relay_that_missed_an_event().await;
    let listed = log_replay(&queue, &["--since", "20m", "--until", "10m", "--dry-run"]).await;
    assert_eq!(listed.trim(), "would replay 0, already enriched 0");
}

#[tokio::test]
async fn a_window_reaching_past_the_logs_retention_is_replayed_with_a_warning() {
    let (queue, _relay, _polyai) = relay_that_missed_an_event().await;
    // The tests' log keeps two days.
    let args = ["log", "replay", "--since", "30d", "--dry-run"];
    let (code, stdout, stderr) = run_to_exit_with_stdout(&args, &as_refs(&queue.env())).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.ends_with("would replay 1, already enriched 1\n"), "{stdout}");
    assert!(stderr.contains("further than the log keeps events (RELAY_LOG_RETENTION, 2days)"), "{stderr}");
}

#[tokio::test]
async fn a_replay_while_another_runs_is_refused() {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::All).await;
    // What a running replay holds: the lock queue, exclusive to its connection.
    let holder = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let lock = format!("{}.log-replay-lock", queue.broker().topology.enrich_queue);
    let held = exclusive::try_hold(&holder, &lock).await.unwrap();
    assert!(held.is_some());
    let (code, stderr) = run_to_exit(&["log", "replay", "--since", "1h"], &as_refs(&queue.env())).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("another `log replay` is running against this broker"), "{stderr}");

    // Gone with the connection that held it, a crash included.
    holder.close(200, "done".into()).await.unwrap();
    let (code, stdout, stderr) =
        run_to_exit_with_stdout(&["log", "replay", "--since", "1h"], &as_refs(&queue.env())).await;
    assert_eq!((code, stdout.trim()), (Some(0), "replayed 0, already enriched 0"), "{stderr}");
}

#[tokio::test]
async fn a_replay_with_nothing_to_read_from_says_why() {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::All).await;
    let env = queue.env();
    let backwards = run_to_exit(&["log", "replay", "--since", "1h", "--until", "2h"], &as_refs(&env)).await;
    assert_eq!(backwards.0, Some(1));
    assert!(backwards.1.contains("--since must be before --until"), "{}", backwards.1);

    let mut off = env.clone();
    off.retain(|(name, _)| name != "RELAY_CONVERSATIONS_LOG");
    off.push(("RELAY_CONVERSATIONS_LOG".into(), "off".into()));
    let (code, stderr) = run_to_exit(&["log", "replay", "--since", "1h"], &as_refs(&off)).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("RELAY_CONVERSATIONS_LOG is off: there is no log to replay from"), "{stderr}");

    let embedded = TestQueue::new(Backend::Embedded, EventTypes::All).await;
    let (code, stderr) = run_to_exit(&["log", "replay", "--since", "1h"], &as_refs(&embedded.env())).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("`log replay` reads RabbitMQ's conversations log: set AMQP_URL"), "{stderr}");
}

/// The worker's reconciler reads the log on from the offset where its last read ended. Deleted
/// and declared again (which changing its retention takes), the stream no longer reaches that
/// offset: a read from there waited for the offset (RabbitMQ 3.10) or started at the end, never
/// met its marker, and with entries still coming never went idle either, so reconciliation
/// stopped without a failure to alert on.
#[tokio::test]
async fn a_read_from_an_offset_a_recreated_log_no_longer_reaches_fails_instead_of_waiting() {
    use lapin::{
        options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions},
        BasicProperties,
    };
    use polyai_relay::queue::amqp::log::{self, ReadFrom};

    let queue = TestQueue::new(Backend::Amqp, EventTypes::All).await;
    let broker = queue.broker();
    let name = broker.topology.conversations_log.clone().expect("the test topology has a log");
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let confirm = connection.create_channel().await.unwrap();
    confirm.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    polyai_relay::queue::amqp::topology::declare(&connection, &broker.topology).await.unwrap();
    // Entries are appended with confirms: a read sees what was stored before its marker, and a
    // publish on another channel not yet confirmed may land after it.
    let declare = || async {
        let channel =
            log::declare(&connection, connection.create_channel().await.unwrap(), &broker.topology).await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        channel
    };
    let entries = declare().await;
    let append = |channel: lapin::Channel| {
        let name = name.clone();
        async move {
            let options = BasicPublishOptions::default();
            let published =
                channel.basic_publish("".into(), name.as_str().into(), options, b"{}", BasicProperties::default());
            published.await.unwrap().await.unwrap();
        }
    };
    for _ in 0..5 {
        append(entries.clone()).await;
    }
    let end = log::read_to_now(&connection, &confirm, &name, ReadFrom::Timestamp(0), |_| {}).await.unwrap();
    let end = end.expect("where the read ended");

    // Read on as usual: exactly what came since, from where the last read ended.
    for _ in 0..3 {
        append(entries.clone()).await;
    }
    let mut read_on = 0;
    let start = ReadFrom::After(end);
    let end = log::read_to_now(&connection, &confirm, &name, start, |_| read_on += 1).await.unwrap().unwrap();
    assert_eq!(read_on, 3);

    entries.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    let entries = declare().await;
    let read = log::read_to_now(&connection, &confirm, &name, ReadFrom::After(end), |_| {});
    // Entries go on arriving, as a relay's do.
    let trickle = async {
        loop {
            append(entries.clone()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            read = read => read,
            () = trickle => unreachable!(),
        }
    })
    .await
    .expect("the read ends instead of waiting for a marker it cannot reach");
    let error = ended.unwrap_err();
    assert!(error.contains("does not hold where it was last read"), "{error}");
}
