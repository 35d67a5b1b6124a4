//! What the publisher's connection does now and then besides publishing: reads the depth of the
//! worker's and the dead-letter queues for `/metrics`, and declares the topology again when one
//! of its queues is gone.
//!
//! The topology is otherwise declared only when a session opens. A queue deleted under a running
//! relay (a mistaken `rabbitmqctl delete_queue`, a migration half done) would stay gone until the
//! next reconnect: the log stream, bound `#`, keeps every publish to the events exchange
//! routable, so webhooks would go on being answered 204 while their events reach no worker.

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
    queue::RETRY_TIERS,
    telemetry::{names, Metrics},
};

/// How often the queues are looked at: the longest a deleted queue stays gone.
pub const INTERVAL: Duration = Duration::from_secs(15);

/// The longest one look may take. It runs in the loop that watches the session's health, so a
/// broker that does not answer (a quorum queue with no leader) must not hold that loop.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Every queue a look watches, the two whose depth it gauges first.
fn watched(topology: &Topology) -> impl Iterator<Item = String> + '_ {
    let gauged = [topology.enrich_queue.clone(), topology.dead_queue.clone()];
    let retries = RETRY_TIERS.iter().map(|tier| topology.retry_queue(*tier));
    let others = [&topology.conversations_queue, &topology.conversations_log].into_iter().flatten().cloned();
    gauged.into_iter().chain(retries).chain(others)
}

/// Each watched queue's count of declarations again, at 0 from the start: an alert on a
/// counter's increase sees it only from its second sample, so one created at 1 by a queue's
/// first loss would never fire.
pub fn count_from_zero(topology: &Topology, meter: &Metrics) {
    for queue in watched(topology) {
        meter.record(|| metrics::counter!(names::QUEUES_DECLARED_AGAIN, "queue" => queue).increment(0));
    }
}

/// One look, on a channel of its own: a passive declare of a missing queue closes its channel,
/// which must not be a publishing one.
pub async fn look(connection: &Connection, topology: &Topology, meter: &Metrics) {
    let Ok(channel) = connection.create_channel().await else { return };
    let gauged = [topology.enrich_queue.clone(), topology.dead_queue.clone()];
    let mut gone = None;
    for queue in watched(topology) {
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
        declare_again(connection, topology, &queue, meter).await;
    }
}

async fn declare_again(connection: &Connection, topology: &Topology, queue: &str, meter: &Metrics) {
    match topology::declare(connection, topology).await {
        Ok(()) => {
            meter.record(|| metrics::counter!(names::QUEUES_DECLARED_AGAIN, "queue" => queue.to_owned()).increment(1));
            tracing::error!(
                queue,
                "the queue was deleted under the running relay and is declared again, with the rest of the topology. {}",
                consequence(topology, queue)
            )
        }
        Err(error) => tracing::warn!(
            queue,
            error = %describe(&error),
            "the queue was deleted under the running relay and could not be declared again; trying again in {} s",
            INTERVAL.as_secs()
        ),
    }
}

/// What the loss of `queue` means, and what brings back what it held.
fn consequence(topology: &Topology, queue: &str) -> String {
    let window = INTERVAL.as_secs();
    let replay = "`polyai-relay log replay --since` a time before it went (and `--until` now) puts back, from the \
                  conversations log, every event that has no record";
    if Some(queue) == topology.conversations_log.as_deref() {
        return "The history it held is gone: a reconciliation over a window before now knows none of the calls \
                delivered then, and would send each again under a `reconcile:` id."
            .to_owned();
    }
    if Some(queue) == topology.conversations_queue.as_deref() {
        return match &topology.conversations_log {
            Some(log) => format!(
                "The records it held, and those published since it went (at most {window} s ago), are in `{log}`: \
                 consumers replay them from there."
            ),
            None => format!(
                "The records it held, and those published since it went (at most {window} s ago), are gone \
                 (RELAY_CONVERSATIONS_LOG is off)."
            ),
        };
    }
    let held = if queue == topology.dead_queue {
        "The dead letters it held are gone"
    } else if queue == topology.enrich_queue {
        "The events it held are gone"
    } else {
        "The retries waiting in it are gone"
    };
    match &topology.conversations_log {
        // Webhooks were answered 204 meanwhile: the log took their events.
        Some(_) if queue == topology.enrich_queue => format!(
            "{held}, and so are those accepted since it went (at most {window} s ago): all are in the conversations \
             log; {replay}."
        ),
        Some(_) => format!("{held}; they are in the conversations log: {replay}."),
        // With no log, a publish to a missing queue is returned and its webhook answered 503.
        None => format!("{held} (RELAY_CONVERSATIONS_LOG is off: nothing holds another copy)."),
    }
}

fn not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}
