//! lapin numbers a publish's confirm, then builds and queues its frames. Two publishes racing on
//! one channel from two threads can reach the broker in the other order than they were
//! numbered, and each is then answered with the other's confirm: a publish the broker refused
//! could be told it was stored. The publisher keeps each channel's publishes in their order.

use std::time::Duration;

use polyai_relay::{
    config::EventTypes,
    queue::{amqp::AmqpPublisher, Destination, Message, PublishError, Publisher},
    telemetry::Metrics,
};
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{Backend, TestQueue},
    broker::Policy,
    poll::poll_until,
};

/// Rounds of publishes, each a mix of refused small ones and stored large ones.
const ROUNDS: usize = 8;
const PER_ROUND: usize = 200;
/// A large body takes lapin a while to cut into frames: the window a smaller publish, numbered
/// after it, could slip through.
const LARGE: usize = 256 * 1024;

fn message(id: String, size: usize) -> Message {
    Message {
        body: vec![b'x'; size].into(),
        message_id: id,
        event_type: "conversation.completed".into(),
        timestamp: 1,
        headers: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_publish_is_answered_with_its_own_confirm_when_publishes_race_on_a_channel() {
    let types = EventTypes::Only(vec!["conversation.completed".into()]);
    let queue = TestQueue::new(Backend::Amqp, types.clone()).await;
    let settings = queue.settings(types, None);
    let broker = queue.broker();
    // Events are refused (nacked): the workers' queue is full and rejects new messages. Dead
    // letters are stored.
    let _policy = Policy::set(&broker.topology.enrich_queue, r#"{"max-length":0}"#).await;
    let stop = CancellationToken::new();
    let publisher = AmqpPublisher::start(
        settings.amqp_url.expect("RabbitMQ"),
        settings.topology.clone(),
        Metrics::isolated(),
        stop.clone(),
    );
    publisher.wait_connected().await;
    poll_until(Duration::from_secs(15), || async {
        match publisher.publish(Destination::Events, message("probe".into(), 10)).await {
            Err(PublishError::Nacked) => Ok(()),
            other => Err(format!("the policy is not in force yet: {other:?}")),
        }
    })
    .await;

    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..PER_ROUND)
            .map(|i| {
                let publisher = publisher.clone();
                let stored = i % 2 == 0;
                let (to, size) = if stored { (Destination::Dead, LARGE) } else { (Destination::Events, 10) };
                let id = format!("evt-{round}-{i}");
                // Spawned, so that publishes run on several threads at once.
                tokio::spawn(async move { (id.clone(), stored, publisher.publish(to, message(id, size)).await) })
            })
            .collect();
        for task in tasks {
            let (id, stored, result) = task.await.expect("the publish task");
            match (stored, &result) {
                (true, Ok(())) | (false, Err(PublishError::Nacked)) => {}
                _ => panic!("{id} (stored: {stored}) was answered {result:?}: another publish's confirm"),
            }
        }
    }
    stop.cancel();
}
