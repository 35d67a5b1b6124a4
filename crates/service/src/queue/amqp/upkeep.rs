//! What the publisher's connection does now and then besides publishing: reads the depth of the
//! worker's and the dead-letter queues for `/metrics`, and declares the topology again when one
//! of its queues is gone.
//!
//! The topology is otherwise declared only when a session opens. A queue deleted under a running
//! relay (a mistaken `rabbitmqctl delete_queue`, a migration half done) would stay gone until the
//! next reconnect: the log stream, bound `#`, keeps every publish routable, so webhooks would go
//! on being answered 204 while their events reach no worker, and the worker could not consume.

use std::time::Duration;

use lapin::{
    options::QueueDeclareOptions,
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::FieldTable,
    Connection,
};

use super::{describe, topology};
use crate::{
    config::Topology,
    telemetry::{names, Metrics},
};

/// How often the queues are looked at: the longest a deleted queue stays gone.
pub const INTERVAL: Duration = Duration::from_secs(15);

/// One look, on a channel of its own: a passive declare of a missing queue closes its channel,
/// which must not be a publishing one.
pub async fn look(connection: &Connection, topology: &Topology, meter: &Metrics) {
    let Ok(channel) = connection.create_channel().await else { return };
    let gauged = [&topology.enrich_queue, &topology.dead_queue];
    let others = [&topology.conversations_queue, &topology.conversations_log].into_iter().flatten();
    let mut gone = None;
    for queue in gauged.into_iter().chain(others) {
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        match channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await {
            Ok(declared) if gauged.contains(&queue) => meter.record(|| {
                metrics::gauge!(names::BACKLOG, "queue" => queue.clone()).set(f64::from(declared.message_count()))
            }),
            Ok(_) => {}
            Err(error) => {
                gone = not_found(&error).then_some(queue);
                break;
            }
        }
    }
    let _ = channel.close(200, "queues looked at".into()).await;
    if let Some(queue) = gone {
        declare_again(connection, topology, queue).await;
    }
}

async fn declare_again(connection: &Connection, topology: &Topology, queue: &str) {
    match topology::declare(connection, topology).await {
        Ok(()) => tracing::error!(
            queue,
            within_secs = INTERVAL.as_secs(),
            "the queue was deleted under the running relay and is declared again, with the rest of the topology. \
             What it held is gone, and so are events accepted since it went (at most `within_secs` ago): \
             they are in the conversations log only: `polyai-relay log replay --since` a time before the queue went \
             puts back every event without a record"
        ),
        Err(error) => tracing::warn!(
            queue,
            error = %describe(&error),
            "the queue was deleted under the running relay and could not be declared again; trying again in {} s",
            INTERVAL.as_secs()
        ),
    }
}

fn not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}
