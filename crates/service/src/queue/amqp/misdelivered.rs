//! Returns lapin handed to another publish than their own (see `confirmed::confirmation`).
//!
//! The return's own publish may have been answered as acked, its caller then taking the message
//! as stored: a webhook answered 204, an event acked after its retry or its record was published.
//! But a return carries the whole message, and here it is in hand: it becomes a dead letter, with
//! the reason, so that nothing answered as stored is lost. It can be looked at with `dead list`
//! and sent back with `dead replay` once a queue takes it again.

use std::time::Duration;

use lapin::message::BasicReturnMessage;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::convert;
use crate::{
    queue::{headers, ledger::WITHDRAWN_TYPE, publish_until_confirmed, Destination, Publisher},
    telemetry::{names, Metrics},
};

/// How long a dead letter made of a return keeps being tried: through a reconnect, or a
/// dead-letter queue deleted and declared again.
const PATIENCE: Duration = Duration::from_secs(60);

/// `relay_misdelivered_returns_total{result}`'s values.
const DEAD_LETTERED: &str = "dead_lettered";
const FAILED: &str = "failed";

/// Both results' counts at 0 from the start: the alert on the increase of `failed` would
/// otherwise miss the first, created at 1, which may well be the only one.
pub fn count_from_zero(meter: &Metrics) {
    for result in [DEAD_LETTERED, FAILED] {
        meter.record(|| metrics::counter!(names::MISDELIVERED_RETURNS, "result" => result).increment(0));
    }
}

/// Dead-letters `returned` through `publisher`, in a task of `rescues` (shutdown waits for them):
/// the publish that found it has its own answer to give.
pub(super) fn dead_letter(
    rescues: &TaskTracker,
    publisher: impl Publisher,
    meter: Metrics,
    returned: BasicReturnMessage,
) {
    let exchange = returned.delivery.exchange.to_string();
    let routing_key = returned.delivery.routing_key.to_string();
    let mut message = convert::message(returned.delivery.data, &returned.delivery.properties);
    // A withdrawal is no event: as a dead letter, `dead replay` would hand it to the worker. Its
    // own publish may have been answered as sent: the log, which it was for, is gone anyway.
    if message.event_type == WITHDRAWN_TYPE {
        tracing::warn!(event_id = %message.message_id, routing_key, "a withdrawal found no conversations log");
        return;
    }
    let reason = format!(
        "no queue took it (exchange `{exchange}`, routing key `{routing_key}`), and the broker's return reached \
         another publish: it may have been answered as stored"
    );
    message.headers.insert(headers::ERROR.to_owned(), reason);
    message.headers.insert(headers::DEAD_AT.to_owned(), OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default());
    let event_id = message.message_id.clone();
    rescues.spawn(async move {
        // Not the relay's shutdown: stopping waits for this instead (for a while).
        let never = CancellationToken::new();
        let result = publish_until_confirmed(&publisher, Destination::Dead, &message, PATIENCE, &never).await;
        let label = if result.is_ok() { DEAD_LETTERED } else { FAILED };
        meter.record(|| metrics::counter!(names::MISDELIVERED_RETURNS, "result" => label).increment(1));
        match result {
            Ok(()) => tracing::error!(
                %event_id,
                exchange,
                routing_key,
                "a message no queue took may have been answered as stored; it is in the dead letters (`dead list`), \
                 to replay once a queue takes it"
            ),
            Err(error) => tracing::error!(
                %event_id,
                exchange,
                routing_key,
                %error,
                "a message no queue took may have been answered as stored, and could not be dead-lettered: only the \
                 conversations log, if on, still has it"
            ),
        }
    });
}
