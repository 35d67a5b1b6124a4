//! One confirmed publish: what "the broker has it" means, in one place for the publisher, the
//! dead-letter tools and reconciliation.

use lapin::{options::BasicPublishOptions, types::ShortString, BasicProperties, Channel, Confirmation};

use super::describe;
use crate::queue::PublishError;

/// Publishes `body` on a confirm-mode `channel` and waits for the broker's confirm.
///
/// `mandatory`: a message no queue takes comes back as a return, and a return is an error, never
/// a success. A nack, or a channel without confirms, is an error too.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm = channel
        .basic_publish(exchange, routing_key, options, body, properties)
        .await
        .map_err(|e| PublishError::Failed(describe(&e)))?
        .await
        .map_err(|e| PublishError::Failed(describe(&e)))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(PublishError::Unroutable(returned.delivery.routing_key.to_string())),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::Failed("confirms are not enabled".into())),
    }
}
