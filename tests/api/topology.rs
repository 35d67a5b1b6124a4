//! The topology on RabbitMQ as it is, whatever its version: nothing a consumer requeues can be
//! deleted by the broker, and a queue declared by an older relay is kept, not refused.

use lapin::{
    message::Delivery,
    options::{
        BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use polyai_relay::{config::EventTypes, queue::amqp::topology};

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

#[tokio::test]
async fn a_worker_queue_deleted_under_a_running_relay_is_declared_again() {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::Only(vec!["conversation.completed".into()])).await;
    let polyai = FakePolyai::start().await;
    let env = queue.relay_env(&polyai.base_url, &[]);
    let env = as_refs(&env);
    let relay = RelayProcess::spawn(&["run"], &env).await;
    relay.wait_ready().await;

    // The log stream, bound `#`, keeps every publish routable: without the queue declared again,
    // this webhook would be answered 204 and reach no worker, and the worker could not consume.
    let broker = queue.broker();
    let enrich = broker.topology.enrich_queue.as_str();
    broker.channel().await.queue_delete(enrich.into(), QueueDeleteOptions::default()).await.unwrap();
    let said = relay.wait_for_log("is declared again", UPKEEP_WAIT).await;
    assert!(said.contains(enrich), "the log names the queue: {said}");

    // Publishing went on through it: the session was not rebuilt.
    let (_, status) = post_event(&http(), &relay.url("/polyai-events"), "evt-after-delete".into()).await;
    assert_eq!(status, Some(204), "{}", relay.logs());
    let record = queue.next_record().await;
    assert_eq!(record.json["event_id"], "evt-after-delete");
    assert!(!relay.logs().contains("broker connection lost"), "{}", relay.logs());
}
