//! Consuming the worker's queue with manual acks on a connection of its own.

use super::{connect::Connector, convert, describe};
use crate::{
    config::AmqpTarget,
    queue::{Acker, ConsumeError, Consumer, Delivery, Source},
};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::Acker as LapinAcker;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
    Channel, Connection,
};

/// [`Source`] for RabbitMQ: each `open` is a fresh connection, so closing a consumer (a paused
/// worker, a shutdown) returns its unacknowledged messages to the queue at once.
pub struct AmqpSource {
    connector: Connector,
    queue: String,
}

impl AmqpSource {
    pub fn new(target: AmqpTarget, queue: String) -> Self {
        Self { connector: Connector::new(&target), queue }
    }
}

#[async_trait]
impl Source for AmqpSource {
    async fn open(&self, prefetch: u16) -> Result<Box<dyn Consumer>, ConsumeError> {
        let unavailable = |e: lapin::Error| ConsumeError::Unavailable(describe(&e));
        let (connection, broker) = self.connector.connect("consumer").await.map_err(ConsumeError::Unavailable)?;
        tracing::debug!(%broker, "consumer connected");
        let channel = connection.create_channel().await.map_err(unavailable)?;
        // The prefetch bounds what a worker holds unacknowledged: the rest stays in the queue
        // for other workers, and a crash redelivers at most this many.
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(unavailable)?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "polyai-relay-worker".into(),
                BasicConsumeOptions::default(), // no_ack = false: manual acks
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        Ok(Box::new(AmqpConsumer { connection: Some(connection), _channel: channel, consumer }))
    }
}

struct AmqpConsumer {
    connection: Option<Connection>,
    /// Kept so the channel lives as long as the consumer.
    _channel: Channel,
    consumer: lapin::Consumer,
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        match self.consumer.next().await? {
            Ok(delivery) => Some(Delivery {
                message: convert::message(delivery.data, &delivery.properties),
                redelivered: delivery.redelivered,
                acker: Box::new(AmqpAcker(delivery.acker)),
            }),
            Err(error) => {
                tracing::warn!(error = %describe(&error), "consumer connection failed");
                None
            }
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // Closing the connection hands unacknowledged messages back to the queue now rather than
        // when the broker notices a dead socket.
        if let Some(connection) = self.connection.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = connection.close(200, "consumer closed".into()).await;
                });
            }
        }
    }
}

struct AmqpAcker(LapinAcker);

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<(), ConsumeError> {
        self.0.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(|e| ConsumeError::Unavailable(describe(&e)))
    }

    async fn requeue(&self) -> Result<(), ConsumeError> {
        let options = BasicNackOptions { requeue: true, ..Default::default() };
        self.0.nack(options).await.map(|_| ()).map_err(|e| ConsumeError::Unavailable(describe(&e)))
    }
}
