//! One confirmed publish: what "the broker has it" means, in one place for the publisher, the
//! dead-letter tools and reconciliation.

use lapin::{
    options::BasicPublishOptions, types::ShortString, BasicProperties, Channel, Confirmation, PublisherConfirm,
};

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
    confirmation(send(channel, exchange, routing_key, body, properties).await?).await
}

/// The first half of [`publish_confirmed`]: sends the publish (`mandatory`). lapin has the body
/// in its frames once this returns, so the caller need not keep it for the confirm.
pub(super) async fn send(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, PublishError> {
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    channel
        .basic_publish(exchange, routing_key, options, body, properties)
        .await
        .map_err(|e| PublishError::Failed(describe(&e)))
}

/// The second half of [`publish_confirmed`]: the broker's answer to a publish [`send`] sent.
pub(super) async fn confirmation(confirm: PublisherConfirm) -> Result<(), PublishError> {
    let confirm = confirm.await.map_err(|e| PublishError::Failed(describe(&e)))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(PublishError::Unroutable(returned.delivery.routing_key.to_string())),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::Failed("confirms are not enabled".into())),
    }
}
