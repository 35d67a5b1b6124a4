//! The crash-loop backstop on RabbitMQ: a message redelivered past the delivery limit is
//! dead-lettered by the broker itself, so one poison event cannot stall the worker's queue.

use futures_util::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, BasicNackOptions},
    types::FieldTable,
};

use crate::helpers::{completed, spawn_app_with, Options};

#[tokio::test]
async fn a_message_requeued_past_the_delivery_limit_is_dead_lettered_by_the_broker() {
    let app = spawn_app_with(Options { worker: false, ..Options::default() }).await;
    assert_eq!(app.post_signed(&completed("CApoison")).await.status(), 204);
    let broker = app.queue.broker();
    let limit = broker.topology.delivery_limit;

    // Stand in for a worker that crashes on this message every time: take it, give it back.
    let channel = broker.channel().await;
    let mut consumer = channel
        .basic_consume(
            broker.topology.enrich_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..=limit {
        let delivery = consumer.next().await.expect("delivered").expect("no error");
        delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    }
    let dead = app.next_dead_letter().await;
    assert_eq!(dead.event, completed("CApoison").as_bytes());
    assert_eq!(broker.ready_count(&broker.topology.enrich_queue).await, 0);
}
