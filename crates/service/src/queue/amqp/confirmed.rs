//! One confirmed publish: what "the broker has it" means, in one place for the publisher, the
//! dead-letter tools and reconciliation.

use std::{
    future::{poll_fn, Future},
    pin::pin,
    sync::{Mutex, PoisonError},
    task::Poll,
};

use lapin::{
    message::BasicReturnMessage, options::BasicPublishOptions, types::ShortString, BasicProperties, Channel,
    Confirmation, PublisherConfirm,
};

use super::describe;
use crate::queue::PublishError;

/// A publish on its way: lapin's promise of the broker's answer, and the message's id, which with
/// the exchange tells this publish's return from another's (see [`confirmation`]).
pub(super) struct Sent {
    confirm: PublisherConfirm,
    message_id: Option<ShortString>,
}

/// A confirm-mode channel that concurrent publishes share.
///
/// lapin numbers a publish's confirm, then cuts the body into frames and queues them, all in the
/// publish's first poll (lapin 4.12, `Channel::basic_publish`). Two publishes polled on two threads
/// at once can queue their frames in the other order than they were numbered. The broker numbers
/// publishes as they arrive, so each is then answered with the other's confirm: a nack taken for
/// an ack (seen on RabbitMQ 3.10 in the first round of `tests/api/confirm_order.rs`). So the first
/// poll runs under the channel's own lock, for the time it takes to queue the frames; the confirms
/// are awaited without it, and publishes stay pipelined.
pub(super) struct SharedChannel {
    pub channel: Channel,
    numbering: Mutex<()>,
}

impl SharedChannel {
    pub fn new(channel: Channel) -> Self {
        Self { channel, numbering: Mutex::new(()) }
    }

    /// [`send`], numbered and queued in one step with respect to the channel's other publishes.
    pub async fn send(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Sent, PublishError> {
        let mut publish = pin!(send(&self.channel, exchange, routing_key, body, properties));
        let first = poll_fn(|context| {
            let _numbering = self.numbering.lock().unwrap_or_else(PoisonError::into_inner);
            Poll::Ready(publish.as_mut().poll(context))
        })
        .await;
        match first {
            Poll::Ready(sent) => sent,
            Poll::Pending => publish.await,
        }
    }
}

/// The broker's answer to one publish, as far as it can be known.
pub(super) struct Answer {
    pub result: Result<(), PublishError>,
    /// A return lapin handed to this publish although it is another's (see [`confirmation`]).
    /// That other publish was told its message was stored: this is the message, in hand.
    pub misdelivered: Option<Box<BasicReturnMessage>>,
}

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
    // One publish at a time on the channel: no other publish's return can reach this one.
    let own = exchange.clone();
    let sent = send(channel, exchange, routing_key, body, properties).await?;
    confirmation(sent, |exchange| exchange == own.as_str()).await.result
}

/// The first half of [`publish_confirmed`]: sends the publish (`mandatory`). lapin has the body
/// in its frames once this returns, so the caller need not keep it for the confirm.
pub(super) async fn send(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> Result<Sent, PublishError> {
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    let message_id = properties.message_id().clone();
    let confirm = channel
        .basic_publish(exchange, routing_key, options, body, properties)
        .await
        .map_err(|e| PublishError::Failed(describe(&e)))?;
    Ok(Sent { confirm, message_id })
}

/// The second half of [`publish_confirmed`]: the broker's answer to a publish [`send`] sent.
///
/// lapin hands each return to the next confirm it completes, and one `multiple` ack completes
/// several confirms in no set order. So with publishes pipelined on a channel, a return can reach
/// another publish than its own, and its own is then answered as acked: a message no queue took,
/// reported as stored (seen on RabbitMQ 3.10: a few in every thousand returned). A return is
/// therefore checked against the message's id and, with `sent_to`, the exchange it was published
/// to: the id alone is not enough, since a record goes out under its event's id, and so do a
/// retry and a dead letter. (The routing key is left out: two publishes of one id to one exchange
/// are one event's, routed alike.) This publish, given another's return, cannot know its own
/// fate, and fails.
pub(super) async fn confirmation(sent: Sent, sent_to: impl Fn(&str) -> bool) -> Answer {
    let failed = |error| Answer { result: Err(error), misdelivered: None };
    let Sent { confirm, message_id } = sent;
    let confirm = match confirm.await {
        Ok(confirm) => confirm,
        Err(error) => return failed(PublishError::Failed(describe(&error))),
    };
    match confirm {
        Confirmation::Ack(None) => Answer { result: Ok(()), misdelivered: None },
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))
            if returned.delivery.properties.message_id() != &message_id
                || !sent_to(returned.delivery.exchange.as_str()) =>
        {
            let error = "the broker's answer came with another message's return".to_owned();
            Answer { result: Err(PublishError::Failed(error)), misdelivered: Some(Box::new(returned)) }
        }
        Confirmation::Ack(Some(returned)) => {
            failed(PublishError::Unroutable(returned.delivery.routing_key.to_string()))
        }
        Confirmation::Nack(_) => failed(PublishError::Nacked),
        Confirmation::NotRequested => failed(PublishError::Failed("confirms are not enabled".into())),
    }
}
