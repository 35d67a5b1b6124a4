//! RELAY_BROKER_MAX_MESSAGE: a message RabbitMQ would refuse is refused by the relay instead,
//! before it is sent, because the broker refuses it by closing the channel the receiver and the
//! worker share.

use polyai_relay::{
    config::EventTypes,
    queue::{amqp::AmqpPublisher, Destination, Message, PublishError, Publisher},
    telemetry::Metrics,
};
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{Backend, TestQueue},
    helpers::completed,
};

/// RabbitMQ 3.x's `max_message_size` default, the test broker's (3.10) limit.
const BROKER_3X_LIMIT: usize = 128 << 20;

fn record(id: &str, body: Vec<u8>) -> Message {
    Message {
        body: body.into(),
        message_id: id.to_owned(),
        event_type: "conversation.completed".into(),
        timestamp: 1,
        headers: Default::default(),
    }
}

#[tokio::test]
async fn a_message_the_broker_would_refuse_is_never_sent_so_the_shared_channels_stay_up() {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::All).await;
    let settings = queue.settings(EventTypes::All, None);
    let mut target = settings.amqp_url.expect("RabbitMQ");
    // The broker's own limit: sent, one byte more would make the test broker close the channel.
    target.max_message = BROKER_3X_LIMIT;
    let stop = CancellationToken::new();
    let publisher = AmqpPublisher::start(target, settings.topology.clone(), Metrics::isolated(), stop.clone());
    publisher.wait_connected().await;

    // Zeroed and never read when refused: the pages are not even touched.
    let over = record("evt-over", vec![0; BROKER_3X_LIMIT + 1]);
    let refused = publisher.publish(Destination::Conversations, over).await;
    let Err(error @ PublishError::TooLarge { .. }) = refused else { panic!("not refused as too large: {refused:?}") };
    let text = error.to_string();
    assert!(text.contains(&(BROKER_3X_LIMIT + 1).to_string()) && text.contains(&BROKER_3X_LIMIT.to_string()), "{text}");
    assert!(text.contains("RELAY_BROKER_MAX_MESSAGE") && text.contains("max_message_size"), "{text}");

    assert!(publisher.is_ready(), "the session was disturbed");
    let small = record("evt-small", completed("CAsmall").into_bytes());
    publisher.publish(Destination::Conversations, small).await.expect("the next message is confirmed");
    let broker = queue.broker();
    assert_eq!(
        broker.next_message(broker.conversations_queue()).await.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("evt-small")
    );
    stop.cancel();
}
