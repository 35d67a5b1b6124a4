//! Returns lapin handed to another publish than their own (see `confirmed::confirmation`).
//!
//! The return's own publish was answered as acked, so its caller took the message as stored: a
//! webhook answered 204, an event acked after its retry or its record was published. But a return
//! carries the whole message, and here it is in hand: it becomes a dead letter, with the reason,
//! so that nothing answered as stored is lost. It can be looked at with `dead list` and sent back
//! with `dead replay` once a queue takes it again.

use lapin::message::BasicReturnMessage;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::convert;
use crate::queue::{headers, Destination, Publisher};

/// Dead-letters `returned` through `publisher`, in a task of its own: the publish that found it
/// has its own answer to give.
pub(super) fn dead_letter(publisher: impl Publisher + 'static, returned: BasicReturnMessage) {
    let exchange = returned.delivery.exchange.to_string();
    let routing_key = returned.delivery.routing_key.to_string();
    let mut message = convert::message(returned.delivery.data, &returned.delivery.properties);
    let reason = format!(
        "no queue took it (exchange `{exchange}`, routing key `{routing_key}`), and the broker's return reached \
         another publish: it had been answered as stored"
    );
    message.headers.insert(headers::ERROR.to_owned(), reason);
    message.headers.insert(headers::DEAD_AT.to_owned(), OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default());
    let event_id = message.message_id.clone();
    tokio::spawn(async move {
        match publisher.publish(Destination::Dead, message).await {
            Ok(()) => tracing::error!(
                %event_id,
                exchange,
                routing_key,
                "a message no queue took had been answered as stored; it is in the dead letters (`dead list`), \
                 to replay once a queue takes it"
            ),
            Err(error) => tracing::error!(
                %event_id,
                exchange,
                routing_key,
                %error,
                "a message no queue took had been answered as stored, and could not be dead-lettered: only the \
                 conversations log, if on, still has it"
            ),
        }
    });
}
