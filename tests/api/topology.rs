//! The topology on RabbitMQ as it is, whatever its version: nothing a consumer requeues can be
//! deleted by the broker, a queue declared by an older relay is kept, not refused, and what is
//! deleted under a running relay is declared again.

use lapin::{
    message::Delivery,
    options::{
        BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use polyai_relay::{
    config::EventTypes,
    queue::{amqp::topology, RETRY_TIERS},
};

use crate::{
    backend::{Backend, TestQueue},
    broker::{amqp_url, TestBroker},
    fake_polyai::FakePolyai,
    helpers::{http, post_event},
    process::{as_refs, RelayProcess},
};

/// More requeues than RabbitMQ 4.0's default delivery limit (20) for quorum queues.
const REQUEUES: usize = 25;

/// How long a requeued message may take to be ready again before the test calls it deleted.
const GONE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Longer than the publisher's look at its queues (every 15 s), which finds a deleted one.
const UPKEEP_WAIT: std::time::Duration = std::time::Duration::from_secs(40);

async fn declared() -> (TestBroker, Connection) {
    let broker = TestBroker::new(EventTypes::All).await;
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    topology::declare(&connection, &broker.topology).await.expect("topology declared");
    (broker, connection)
}

/// Publishes one message to `exchange`, gets and requeues it [`REQUEUES`] times, and says
/// whether it is still in `queue`.
async fn survives_requeues(connection: &Connection, exchange: &str, queue: &str) -> bool {
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let key = "conversation.completed".into();
    let publish =
        channel.basic_publish(exchange.into(), key, BasicPublishOptions::default(), b"{}", BasicProperties::default());
    assert!(publish.await.unwrap().await.unwrap().is_ack(), "the broker took the message");
    for requeued in 0..REQUEUES {
        let Some(message) = get(&channel, queue).await else {
            eprintln!("gone after {requeued} requeues");
            return false;
        };
        message.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    }
    let last = get(&channel, queue).await;
    let _ = channel.close(200, "done".into()).await;
    last.is_some()
}

/// The next message of `queue`, waiting for a requeued one to be ready again (a quorum queue
/// applies a requeue asynchronously); `None` if none comes within [`GONE_AFTER`].
async fn get(channel: &Channel, queue: &str) -> Option<Delivery> {
    let deadline = tokio::time::Instant::now() + GONE_AFTER;
    while tokio::time::Instant::now() < deadline {
        if let Some(message) = channel.basic_get(queue.into(), BasicGetOptions::default()).await.unwrap() {
            return Some(message.delivery);
        }
        tokio::task::yield_now().await;
    }
    None
}

#[tokio::test]
async fn a_record_requeued_more_often_than_any_default_limit_stays_in_the_conversations_queue() {
    let (broker, connection) = declared().await;
    let queue = broker.conversations_queue().to_owned();
    assert!(survives_requeues(&connection, &broker.topology.conversations_exchange, &queue).await);
}

#[tokio::test]
async fn a_dead_letter_browsed_by_get_and_requeue_stays_in_the_dead_letter_queue() {
    let (broker, connection) = declared().await;
    assert!(survives_requeues(&connection, &broker.topology.dead_exchange, &broker.topology.dead_queue).await);
}

#[tokio::test]
async fn a_dead_letter_queue_declared_by_an_older_relay_is_kept_with_its_messages() {
    let broker = TestBroker::new(EventTypes::All).await;
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    // What relays before explicit delivery limits declared: only the queue type.
    let channel = connection.create_channel().await.unwrap();
    let mut old = FieldTable::default();
    old.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(broker.topology.dead_queue.as_str().into(), options, old).await.unwrap();
    channel
        .basic_publish(
            "".into(),
            broker.topology.dead_queue.as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await
        .unwrap();

    topology::declare(&connection, &broker.topology).await.expect("an existing queue does not stop the relay");
    assert_eq!(broker.ready_count(&broker.topology.dead_queue).await, 1);
}

/// A relay (`run`) on a queue of its own, ready.
async fn running_relay() -> (TestQueue, FakePolyai, RelayProcess) {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::Only(vec!["conversation.completed".into()])).await;
    let polyai = FakePolyai::start().await;
    let relay = RelayProcess::spawn(&["run"], &as_refs(&queue.relay_env(&polyai.base_url, &[]))).await;
    relay.wait_ready().await;
    (queue, polyai, relay)
}

/// Deletes `name` under `relay` and waits for the relay's error log that it is declared again.
async fn delete_and_wait_for_it_again(queue: &TestQueue, relay: &RelayProcess, name: &str) -> String {
    let broker = queue.broker();
    broker.channel().await.queue_delete(name.into(), QueueDeleteOptions::default()).await.unwrap();
    let said = relay.wait_for_log("is declared again", UPKEEP_WAIT).await;
    assert!(said.contains(name), "the log names the queue: {said}");
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    broker.channel().await.queue_declare(name.into(), passive, FieldTable::default()).await.expect("declared again");
    // Counted for alerts (RelayQueueDeclaredAgain), once.
    let metrics = http().get(relay.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let counted = format!("relay_queues_declared_again_total{{queue=\"{name}\"}} 1");
    assert!(metrics.lines().any(|line| line == counted), "no `{counted}` in:\n{metrics}");
    said
}

#[tokio::test]
async fn a_worker_queue_deleted_under_a_running_relay_is_declared_again() {
    let (queue, _polyai, relay) = running_relay().await;
    // The log stream, bound `#`, keeps every publish routable: without the queue declared again,
    // this webhook would be answered 204 and reach no worker, and the worker could not consume.
    let enrich = queue.broker().topology.enrich_queue.clone();
    let said = delete_and_wait_for_it_again(&queue, &relay, &enrich).await;
    assert!(said.contains("so are those accepted since it went") && said.contains("log replay"), "{said}");

    // Publishing went on through it: the session was not rebuilt.
    let (_, status) = post_event(&http(), &relay.url("/polyai-events"), "evt-after-delete".into()).await;
    assert_eq!(status, Some(204), "{}", relay.logs());
    let record = queue.next_record().await;
    assert_eq!(record.json["event_id"], "evt-after-delete");
    assert!(!relay.logs().contains("broker connection lost"), "{}", relay.logs());
}

#[tokio::test]
async fn a_delay_queue_deleted_under_a_running_relay_is_declared_again() {
    // Without it, a retry scheduled there would come back unroutable, every time.
    let (queue, _polyai, relay) = running_relay().await;
    let longest = queue.broker().topology.retry_queue(*RETRY_TIERS.last().unwrap());
    let said = delete_and_wait_for_it_again(&queue, &relay, &longest).await;
    assert!(said.contains("The retries waiting in it are gone"), "{said}");
}

#[tokio::test]
async fn an_exchange_deleted_under_a_running_relay_costs_a_503_and_is_declared_again() {
    let (queue, _polyai, relay) = running_relay().await;
    let broker = queue.broker();
    let events = broker.topology.events_exchange.as_str();
    broker.channel().await.exchange_delete(events.into(), ExchangeDeleteOptions::default()).await.unwrap();

    // The publish makes the broker close a publishing channel: that session is done, and the next
    // one declares the topology again.
    let (_, status) = post_event(&http(), &relay.url("/polyai-events"), "evt-refused".into()).await;
    assert_eq!(status, Some(503), "{}", relay.logs());
    relay.wait_for_log("broker connection lost", UPKEEP_WAIT).await;
    relay.wait_ready().await;
    let (_, status) = post_event(&http(), &relay.url("/polyai-events"), "evt-after".into()).await;
    assert_eq!(status, Some(204), "{}", relay.logs());
    assert_eq!(queue.next_record().await.json["event_id"], "evt-after");
}
