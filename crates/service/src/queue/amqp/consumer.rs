//! Consuming the worker's queue with manual acks on a connection of its own.

use super::{connect::Connector, convert, describe};
use crate::{
    config::AmqpTarget,
    queue::{Acker, ConsumeError, Consumer, Delivery, Source},
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
use tokio::sync::Mutex;

/// [`Source`] for RabbitMQ: each `open` is a fresh connection, so closing a consumer (a paused
/// worker, a shutdown) returns its unacknowledged messages to the queue at once.
pub struct AmqpSource {
    connector: Connector,
    queue: String,
    /// Where `get` takes messages: one connection and channel, opened by the first `get` and kept
    /// while they work. Not one per `get`: RabbitMQ 4.0's quorum queues can give a message back,
    /// to be handed out again, when the channel that acked it closes right after the ack.
    getting: Mutex<Option<(Closing, Channel)>>,
}

impl AmqpSource {
    pub fn new(target: AmqpTarget, queue: String, metrics: Metrics) -> Self {
        Self { connector: Connector::new(&target, metrics), queue, getting: Mutex::new(None) }
    }

    /// The channel `get` uses: the one kept, while it and its connection work, or a new one.
    async fn getting_channel(&self) -> Result<Channel, ConsumeError> {
        let mut getting = self.getting.lock().await;
        if let Some((Closing(Some(connection)), channel)) = getting.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        // A broken one is closed (dropped) before its replacement opens.
        *getting = None;
        let (connection, _) = self.connector.connect("worker step").await.map_err(ConsumeError::Unavailable)?;
        let connection = Closing(Some(connection));
        let channel = connection.0.as_ref().expect("just opened").create_channel().await;
        let channel = channel.map_err(|e| ConsumeError::Unavailable(describe(&e)))?;
        *getting = Some((connection, channel.clone()));
        Ok(channel)
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
        let channel = self.getting_channel().await?;
        let options = BasicGetOptions { no_ack: false };
        // A failure breaks the channel (or its connection): the next `get` opens another.
        let got = channel
            .basic_get(self.queue.as_str().into(), options)
            .await
            .map_err(|e| ConsumeError::Unavailable(describe(&e)))?;
        let Some(got) = got else { return Ok(None) };
        let delivery = got.delivery;
        Ok(Some(Delivery {
            message: convert::message(delivery.data, &delivery.properties),
            redelivered: delivery.redelivered,
            acker: Box::new(AmqpAcker { acker: delivery.acker, requeue_if_dropped: true }),
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
                acker: Box::new(AmqpAcker { acker: delivery.acker, requeue_if_dropped: false }),
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

struct AmqpAcker {
    acker: LapinAcker,
    /// For a message taken with `get`: dropped unsettled, it goes back at once, as what a
    /// consumer held goes back when its connection closes.
    requeue_if_dropped: bool,
}

fn requeue_options() -> BasicNackOptions {
    BasicNackOptions { requeue: true, ..Default::default() }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<(), ConsumeError> {
        let acked = self.acker.ack(BasicAckOptions::default()).await;
        acked.map(|_| ()).map_err(|e| ConsumeError::Unavailable(describe(&e)))
    }

    async fn requeue(&self) -> Result<(), ConsumeError> {
        let requeued = self.acker.nack(requeue_options()).await;
        requeued.map(|_| ()).map_err(|e| ConsumeError::Unavailable(describe(&e)))
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        // Not usable once settled, nor once its channel failed (the broker has the message back then).
        if self.requeue_if_dropped && self.acker.usable() {
            let acker = self.acker.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = acker.nack(requeue_options()).await;
                });
            }
        }
    }
}
