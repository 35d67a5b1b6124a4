//! A message no queue takes comes back as a return, and lapin hands each return to the next
//! confirm it completes: with publishes pipelined, sometimes another publish's. The one it
//! belonged to is then answered as acked. The relay recognises a return by its message's id, and
//! dead-letters one that reached the wrong publish: nothing answered as stored is lost.

use std::collections::HashSet;

use futures_util::future::join_all;
use polyai_relay::{
    config::EventTypes,
    queue::{amqp::AmqpPublisher, Destination, Message, Publisher},
    telemetry::Metrics,
};
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{Backend, TestQueue},
    broker::MESSAGE_WAIT,
    helpers::completed,
    poll::poll_until,
};

/// Publishes at once per round; one in `UNROUTABLE_EVERY` of a type no queue takes.
const PUBLISHES: usize = 2000;
const UNROUTABLE_EVERY: usize = 7;
/// Rounds tried for a return to reach the wrong publish (on RabbitMQ 3.10 most rounds have some).
const ROUNDS: usize = 25;

fn event(id: String, event_type: &str) -> Message {
    Message {
        body: completed(&format!("CA{id}")).into(),
        message_id: id,
        event_type: event_type.into(),
        timestamp: 1,
        headers: Default::default(),
    }
}

#[tokio::test]
async fn a_message_whose_return_reached_another_publish_ends_in_the_dead_letters() {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::Only(vec!["conversation.completed".into()])).await;
    let mut settings = queue.settings(EventTypes::Only(vec!["conversation.completed".into()]), None);
    // Without the log, whose `#` binding takes every event, a type no queue is bound for is returned.
    settings.topology.conversations_log = None;
    let stop = CancellationToken::new();
    let target = settings.amqp_url.expect("RabbitMQ");
    let metrics = Metrics::isolated();
    let publisher = AmqpPublisher::start(target, settings.topology.clone(), metrics.clone(), stop.clone());
    publisher.wait_connected().await;
    let broker = queue.broker();
    let dead_queue = broker.topology.dead_queue.as_str();

    for round in 0..ROUNDS {
        let publishes = (0..PUBLISHES).map(|i| {
            let routable = i % UNROUTABLE_EVERY != 3;
            let event_type = if routable { "conversation.completed" } else { "handoff.created" };
            let message = event(format!("evt-{round}-{i}"), event_type);
            let publisher = publisher.clone();
            async move { (message.message_id.clone(), routable, publisher.publish(Destination::Events, message).await) }
        });
        let answered = join_all(publishes).await;
        // Unroutable, yet answered as stored: each of these had its return reach another publish.
        let stored_unroutable: HashSet<String> = answered
            .iter()
            .filter(|(_, routable, result)| !routable && result.is_ok())
            .map(|(id, ..)| id.clone())
            .collect();
        if stored_unroutable.is_empty() {
            continue;
        }
        // Dead letters made of earlier rounds' misdelivered returns may be there too: each
        // misreported message is looked for by its id.
        let dead = std::sync::Mutex::new(HashSet::new());
        poll_until(MESSAGE_WAIT, || async {
            let drained = broker.drain_ids(dead_queue).await;
            let mut dead = dead.lock().unwrap();
            dead.extend(drained);
            let lost: Vec<_> = stored_unroutable.difference(&dead).collect();
            if !lost.is_empty() {
                return Err(format!("answered as stored, in no queue: {lost:?}"));
            }
            // Counted too, by what became of each, once its rescue has seen the confirm.
            let rendered = metrics.render();
            let counted = rendered
                .lines()
                .find_map(|line| line.strip_prefix("relay_misdelivered_returns_total{result=\"dead_lettered\"} "))
                .and_then(|n| n.parse::<usize>().ok());
            match counted {
                Some(n) if n >= stored_unroutable.len() => Ok(()),
                _ => Err(format!("the dead letters are not all counted:\n{rendered}")),
            }
        })
        .await;
        stop.cancel();
        return;
    }
    stop.cancel();
    // Nothing to show on this broker: no return reached another publish in every round.
    eprintln!("no return reached another publish in {ROUNDS} rounds of {PUBLISHES}");
}
