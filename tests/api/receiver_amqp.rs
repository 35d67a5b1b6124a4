//! RabbitMQ-only receiver behaviour: message properties, and the broker failing in each way.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use polyai_relay::signature::sign;

use crate::{
    broker::Policy,
    helpers::{completed, header, now, spawn_app_with, Options, SECRET},
    poll::poll_until,
};

fn receiver_only() -> Options {
    Options { worker: false, ..Options::default() }
}

#[tokio::test]
async fn a_signed_event_is_answered_204_and_enqueued_with_every_property() {
    let app = spawn_app_with(receiver_only()).await;
    let body = completed("CA0001");
    let ts = now().to_string();
    let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
    let response = app
        .post(&body, &[("x-polyai-timestamp", &ts), ("x-polyai-signature", &signature), ("x-polyai-event-id", "evt_1")])
        .await;
    assert_eq!(response.status(), 204);

    let delivery = app.queue.broker().next_message(&app.queue.broker().topology.enrich_queue).await;
    assert_eq!(delivery.data, body.as_bytes(), "the body is forwarded byte for byte");
    assert_eq!(delivery.routing_key.as_str(), "conversation.completed");
    let p = &delivery.properties;
    assert_eq!(p.content_type().as_ref().unwrap().as_str(), "application/json");
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(p.message_id().as_ref().unwrap().as_str(), "evt_1");
    assert_eq!(p.kind().as_ref().unwrap().as_str(), "conversation.completed");
    assert_eq!(p.app_id().as_ref().unwrap().as_str(), "polyai-relay");
    assert!(p.timestamp().unwrap() >= now() as u64 - 60);
    assert_eq!(header(&delivery, "x-polyai-timestamp").as_deref(), Some(ts.as_str()));
    assert_eq!(header(&delivery, "x-relay-signature-scheme").as_deref(), Some("timestamped"));
    let received_at = header(&delivery, "x-relay-received-at").unwrap();
    assert!(time::OffsetDateTime::parse(&received_at, &time::format_description::well_known::Rfc3339).is_ok());
}

#[tokio::test]
async fn a_webhook_larger_than_many_frames_is_enqueued_whole() {
    // The relay asks the broker for small frames (a smaller buffer per connection): a body near
    // the size limit travels as dozens of body frames and must arrive byte for byte.
    let app = spawn_app_with(receiver_only()).await;
    let padding = "x".repeat(900 * 1024);
    let body = serde_json::json!({
        "type": "conversation.completed",
        "data": {"conversation_id": "CA0003", "environment": "live", "padding": padding},
    })
    .to_string();
    assert_eq!(app.post_signed(&body).await.status(), 204);

    let delivery = app.queue.broker().next_message(&app.queue.broker().topology.enrich_queue).await;
    assert_eq!(delivery.data.len(), body.len());
    assert!(delivery.data == body.as_bytes(), "the body is forwarded byte for byte");
}

#[tokio::test]
async fn a_body_signed_event_is_accepted_and_its_id_is_a_digest_of_the_body() {
    let app = spawn_app_with(receiver_only()).await;
    let body = completed("CA0002");
    let signature = sign(SECRET.as_bytes(), None, body.as_bytes());
    assert_eq!(app.post(&body, &[("x-polyai-signature", &signature)]).await.status(), 204);

    let delivery = app.queue.broker().next_message(&app.queue.broker().topology.enrich_queue).await;
    assert_eq!(header(&delivery, "x-relay-signature-scheme").as_deref(), Some("body"));
    let id = delivery.properties.message_id().as_ref().unwrap().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
}

#[tokio::test]
async fn an_event_no_queue_is_bound_for_gets_503_not_204() {
    let app = spawn_app_with(receiver_only()).await;
    // Take the bindings away under the relay (the worker's queue, and the log stream that
    // records every event): the broker returns the mandatory publish.
    let topology = &app.queue.broker().topology;
    let channel = app.queue.broker().channel().await;
    let log = topology.conversations_log.as_deref().expect("tests keep the log");
    for (queue, key) in [(topology.enrich_queue.as_str(), "conversation.completed"), (log, "#")] {
        channel
            .queue_unbind(
                queue.into(),
                topology.events_exchange.as_str().into(),
                key.into(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let response = app.post_signed(&completed("CA0009")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(app.metric(r#"relay_publish_confirms_total{destination="events",result="returned"}"#).await, 1.0);
}

#[tokio::test]
async fn with_the_broker_down_requests_get_503_with_retry_after_inside_the_deadline() {
    let options = Options {
        amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        wait_ready: false,
        ack_deadline: Duration::from_millis(500),
        ..receiver_only()
    };
    let app = spawn_app_with(options).await;
    let started = std::time::Instant::now();
    let response = app.post_signed(&completed("CA0008")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(started.elapsed() < Duration::from_secs(3), "answered within the deadline, not after a hang");
    assert_eq!(app.admin_get("/readyz").await.status(), 503);
    assert_eq!(app.admin_get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn the_backlog_of_the_workers_queue_is_reported() {
    let app = spawn_app_with(receiver_only()).await;
    let backlog = format!(r#"relay_queue_backlog{{queue="{}"}}"#, app.queue.broker().topology.enrich_queue);
    assert_eq!(app.post_signed(&completed("CA1")).await.status(), 204);
    // No worker takes it: the queue holds it until the next depth reading (every 15 s) says so.
    app.wait_for_metric(&backlog, 1.0).await;
    assert_eq!(app.metric(&backlog).await, 1.0, "and /metrics shows it");
}

#[tokio::test]
async fn a_publish_the_broker_nacks_gets_503() {
    let app = spawn_app_with(receiver_only()).await;
    // A full queue with reject-publish overflow makes the broker nack new messages.
    let _policy = Policy::set(&app.queue.broker().topology.enrich_queue, r#"{"max-length":0}"#).await;
    // Policies reach the queue a moment after rabbitmqctl returns, and the broker says when to
    // no one: posted until a publish meets it.
    poll_until(Duration::from_secs(15), || async {
        match app.post_signed(&completed("CA0011")).await.status().as_u16() {
            503 => Ok(()),
            status => Err(format!("never nacked: {status}")),
        }
    })
    .await;
    assert!(app.metric(r#"relay_publish_confirms_total{destination="events",result="nack"}"#).await >= 1.0);
}

/// RabbitMQ keeps a full queue's refusal in each channel that published to it, and 3.10 keeps it
/// after the queue's limit is lifted while nothing drains the queue: a new channel publishes at
/// once, the old ones nack on. The relay replaces channels the broker has refused for a while, so
/// webhooks are taken again without a restart. (On 3.10 this fails without the replacement.)
#[tokio::test]
async fn webhooks_are_taken_again_once_a_full_queues_limit_is_lifted_with_nothing_draining_it() {
    let app = spawn_app_with(receiver_only()).await;
    let policy = Policy::set(&app.queue.broker().topology.enrich_queue, r#"{"max-length":0}"#).await;
    // Posted until one is nacked: those before the policy reached the queue are taken.
    let (tried, taken) = (AtomicU64::new(0), AtomicU64::new(0));
    poll_until(Duration::from_secs(15), || async {
        let id = format!("CArefused{}", tried.fetch_add(1, Ordering::SeqCst));
        match app.post_signed(&completed(&id)).await.status().as_u16() {
            503 => Ok(()),
            status => {
                taken.fetch_add(u64::from(status == 204), Ordering::SeqCst);
                Err(format!("never nacked: {status}"))
            }
        }
    })
    .await;
    // Publishes go round the relay's channels: each meets the full queue.
    for n in 0..8 {
        assert_eq!(app.post_signed(&completed(&format!("CAfull{n}"))).await.status(), 503);
    }
    drop(policy);

    // Nothing consumes the queue. Webhooks keep coming, refused, until the refused channels are
    // replaced, about 10 s after the first refusal; then they are taken.
    let retried = AtomicU64::new(0);
    poll_until(Duration::from_secs(30), || async {
        let id = format!("CAretried{}", retried.fetch_add(1, Ordering::SeqCst));
        match app.post_signed(&completed(&id)).await.status().as_u16() {
            204 => Ok(()),
            status => Err(format!("still refused: {status}")),
        }
    })
    .await;
    // 3.10 takes them only on new channels (`relay_publisher_reopened_total`); 4.0 tells the old
    // ones to go on when the policy goes, and the relay needs no new ones there.
    for n in 0..8 {
        assert_eq!(app.post_signed(&completed(&format!("CAafter{n}"))).await.status(), 204, "webhook {n}");
    }
    assert_eq!(app.queue.pending().await, taken.load(Ordering::SeqCst) + 9, "they are in the queue");
}
