//! Consuming the worker's queue with manual acks on a connection of its own.

use super::{connect::Connector, convert, describe};
use crate::{
    config::AmqpTarget,
    queue::{Acker, ConsumeError, Consumer, Delivery, Holding, Source},
    telemetry::Metrics,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::Acker as LapinAcker;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions},
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
    pub fn new(target: AmqpTarget, queue: String, metrics: Metrics) -> Self {
        Self { connector: Connector::new(&target, metrics), queue }
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

    async fn get(&self) -> Result<Option<Delivery>, ConsumeError> {
        let unavailable = |e: lapin::Error| ConsumeError::Unavailable(describe(&e));
        let (connection, _) = self.connector.connect("worker step").await.map_err(ConsumeError::Unavailable)?;
        let channel = connection.create_channel().await;
        let connection = Closing(Some(connection));
        let channel = channel.map_err(unavailable)?;
        let options = BasicGetOptions { no_ack: false };
        let Some(got) = channel.basic_get(self.queue.as_str().into(), options).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let delivery = got.delivery;
        Ok(Some(Delivery {
            message: convert::message(delivery.data, &delivery.properties),
            redelivered: delivery.redelivered,
            // The connection goes with the delivery: closed unsettled, it gives the message back.
            acker: Box::new(Holding { acker: Box::new(AmqpAcker(delivery.acker)), _owner: (connection, channel) }),
        }))
    }
}

/// Closes a connection when dropped, so what it holds unacknowledged goes back at once.
struct Closing(Option<Connection>);

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = connection.close(200, "done".into()).await;
                });
            }
        }
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
