//! RELAY_BROKER_MAX_MESSAGE: a message RabbitMQ would refuse is refused by the relay instead,
//! before it is sent, because the broker refuses it by closing the channel the receiver and the
//! worker share.

use polyai_relay::{
    config::EventTypes,
    queue::{amqp::AmqpPublisher, Destination, Message, PublishError, Publisher},
    telemetry::Metrics,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{Backend, TestQueue},
    fake_polyai::Reply,
    helpers::{completed, spawn_app_with, Options},
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

/// The number in `error` just before ` bytes, over`: the size of what was refused.
fn refused_size(error: &str) -> usize {
    let before = error.split(" bytes, over").next().unwrap_or_default();
    before.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no size in: {error}"))
}

#[tokio::test]
async fn a_record_over_the_broker_limit_is_dead_lettered_after_one_fetch_and_the_next_event_is_enriched() {
    let limit = 64 << 10;
    let options = Options { broker_max_message: Some(limit), max_body: limit, ..Options::default() };
    let app = spawn_app_with(options).await;
    // Well within RELAY_API_MAX_RESPONSE, over the broker's limit once in a record. The same
    // answer every time, so a second fetch would be refused again, not slip through.
    let big = json!({"id": "CAbig", "padding": "x".repeat(256 << 10)});
    app.polyai.script_conversation("CAbig", std::iter::repeat_n(Reply::Json(big), 30));

    assert_eq!(app.post_signed(&completed("CAbig")).await.status(), 204);
    let dead = app.next_dead_letter().await;
    let error = dead.error.unwrap_or_default();
    assert!(error.contains("enriched record") && error.contains(&format!("limit of {limit} bytes")), "{error}");
    assert!(error.contains("RELAY_BROKER_MAX_MESSAGE") && error.contains("max_message_size"), "{error}");
    assert!(refused_size(&error) > 256 << 10, "{error}");
    assert_eq!(dead.event, completed("CAbig").as_bytes());
    assert_eq!(dead.attempts.as_deref(), Some("1"));
    assert_eq!(app.polyai.by_id_requests().len(), 1, "fetched once, not retried");
    app.wait_for_metric(r#"relay_dead_letters_total{reason="too_large"}"#, 1.0).await;
    assert_eq!(
        app.metric(r#"relay_publish_confirms_total{destination="conversations",result="too_large"}"#).await,
        1.0
    );

    // Nothing reached the broker: the shared session never went down, and the next event flows.
    assert_eq!(app.admin_get("/readyz").await.status(), 200);
    assert_eq!(app.post_signed(&completed("CAsmall")).await.status(), 204);
    assert_eq!(app.next_record().await.json["conversation"]["id"], "CAsmall");
    assert_eq!(app.polyai.by_id_requests().len(), 2);
}
