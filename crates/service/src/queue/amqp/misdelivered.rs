//! Returns lapin handed to another publish than their own (see `confirmed::confirmation`).
//!
//! The return's own publish may have been answered as acked, its caller then taking the message
//! as stored: a webhook answered 204, an event acked after its retry or its record was published.
//! But a return carries the whole message, and here it is in hand: it becomes a dead letter, with
//! the reason, so that nothing answered as stored is lost. It can be looked at with `dead list`
//! and sent back with `dead replay` once a queue takes it again: an event to the worker, a record
//! to the conversations exchange.

use std::time::Duration;

use lapin::message::BasicReturnMessage;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::convert;
use crate::{
    queue::{headers, ledger::WITHDRAWN_TYPE, publish_until_confirmed, Destination, Message, Publisher},
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
/// the publish that found it has its own answer to give. `records_exchange` tells a record from
/// an event.
pub(super) fn dead_letter(
    rescues: &TaskTracker,
    publisher: impl Publisher,
    meter: Metrics,
    returned: BasicReturnMessage,
    records_exchange: &str,
) {
    let exchange = returned.delivery.exchange.to_string();
    let routing_key = returned.delivery.routing_key.to_string();
    let event_id = returned.delivery.properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default();
    let Some(message) = letter_of(returned, records_exchange, OffsetDateTime::now_utc()) else {
        // A withdrawal is no event: as a dead letter, `dead replay` would hand it to the worker. Its
        // own publish may have been answered as sent: the log, which it was for, is gone anyway.
        tracing::warn!(%event_id, routing_key, "a withdrawal found no conversations log");
        return;
    };
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

/// The dead letter a return becomes, with why and when; `None` for a withdrawal. A record is
/// marked as one ([`headers::RECORD`]), so that `dead replay` sends it back to `records_exchange`,
/// not to the worker.
fn letter_of(returned: BasicReturnMessage, records_exchange: &str, now: OffsetDateTime) -> Option<Message> {
    let delivery = returned.delivery;
    let mut message = convert::message(delivery.data, &delivery.properties);
    if message.event_type == WITHDRAWN_TYPE {
        return None;
    }
    let (exchange, routing_key) = (delivery.exchange.as_str(), delivery.routing_key.as_str());
    let reason = format!(
        "no queue took it (exchange `{exchange}`, routing key `{routing_key}`), and the broker's return reached \
         another publish: it may have been answered as stored"
    );
    message.headers.insert(headers::ERROR.to_owned(), reason);
    message.headers.insert(headers::DEAD_AT.to_owned(), now.format(&Rfc3339).unwrap_or_default());
    if exchange == records_exchange {
        message.headers.insert(headers::RECORD.to_owned(), "true".to_owned());
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use lapin::{message::Delivery, types::ShortString, BasicProperties};

    use super::*;
    use crate::dead::replay_destination;

    const RECORDS: &str = "polyai.conversations";

    fn returned(exchange: &str, event_type: &str) -> BasicReturnMessage {
        let mut delivery = Delivery::mock(0, exchange.into(), event_type.into(), false, b"{}".to_vec());
        delivery.properties = BasicProperties::default()
            .with_message_id(ShortString::from("evt_1"))
            .with_type(ShortString::from(event_type));
        BasicReturnMessage { delivery, reply_code: 312, reply_text: "NO_ROUTE".into() }
    }

    #[test]
    fn a_returned_record_is_marked_so_that_its_replay_goes_back_to_the_records() {
        let letter = letter_of(returned(RECORDS, "conversation.completed"), RECORDS, OffsetDateTime::UNIX_EPOCH)
            .expect("a dead letter");
        assert_eq!(letter.header(headers::RECORD), Some("true"));
        assert_eq!(replay_destination(&letter), Destination::Conversations);
        assert_eq!(letter.header(headers::DEAD_AT), Some("1970-01-01T00:00:00Z"));
        let error = letter.header(headers::ERROR).expect("why");
        assert!(error.contains("`polyai.conversations`") && error.contains("`conversation.completed`"), "{error}");
    }

    #[test]
    fn a_returned_event_is_replayed_to_the_worker() {
        let letter =
            letter_of(returned("polyai.events", "conversation.completed"), RECORDS, OffsetDateTime::UNIX_EPOCH)
                .expect("a dead letter");
        assert_eq!(letter.header(headers::RECORD), None);
        assert_eq!(replay_destination(&letter), Destination::Events);
    }

    #[test]
    fn a_returned_withdrawal_becomes_no_dead_letter() {
        assert_eq!(letter_of(returned("", WITHDRAWN_TYPE), RECORDS, OffsetDateTime::UNIX_EPOCH), None);
    }
}
