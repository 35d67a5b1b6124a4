//! A real RabbitMQ for each test, isolated by unique exchange and queue names that are deleted
//! when the test ends (even when it fails).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
        ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
    Channel, Connection, ConnectionProperties,
};
use polyai_relay::{
    config::{EventTypes, Topology},
    queue::RETRY_TIERS,
};

/// How long a test waits for a message before it fails.
pub const MESSAGE_WAIT: Duration = Duration::from_secs(30);

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub struct TestBroker {
    pub url: String,
    pub topology: Topology,
    connection: Connection,
    /// The channel messages are taken on, kept open for the whole test and used by one reader at
    /// a time. An ack on a channel that closes right after it can be lost on RabbitMQ 4.0's quorum
    /// queues (the message goes back and is handed out again), so acks never precede a close.
    reader: tokio::sync::Mutex<Option<Channel>>,
}

impl TestBroker {
    pub async fn new(event_types: EventTypes) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let topology = Self::topology_for(&format!("test-{}", &id[..12]), event_types);
        let url = amqp_url();
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("tests need RabbitMQ at AMQP_URL ({url}): {e}"));
        Self { url, topology, connection, reader: tokio::sync::Mutex::new(None) }
    }

    /// Names under `prefix`, so tests sharing a broker never meet.
    pub fn topology_for(prefix: &str, event_types: EventTypes) -> Topology {
        // Two days: a reconciliation may not reach further back than the ledger remembers, and the
        // tests reconcile the last 24 h. The stream goes with the test's other names when it ends.
        Topology { event_types, log_retention: Duration::from_secs(2 * 86_400), ..Topology::named(prefix) }
    }

    pub async fn channel(&self) -> Channel {
        self.connection.create_channel().await.expect("channel")
    }

    /// The relay's variables naming this test's topology (a spawned binary declares these
    /// instead of the production names on the shared broker).
    pub fn topology_env(&self) -> Vec<(&'static str, String)> {
        let t = &self.topology;
        vec![
            ("RELAY_EVENTS", "*".into()),
            ("RELAY_EVENTS_EXCHANGE", t.events_exchange.clone()),
            ("RELAY_ENRICH_QUEUE", t.enrich_queue.clone()),
            ("RELAY_CONVERSATIONS_EXCHANGE", t.conversations_exchange.clone()),
            ("RELAY_CONVERSATIONS_QUEUE", self.conversations_queue().to_owned()),
            ("RELAY_DEAD_EXCHANGE", t.dead_exchange.clone()),
            ("RELAY_DEAD_QUEUE", t.dead_queue.clone()),
            ("RELAY_CONVERSATIONS_LOG", t.conversations_log.clone().unwrap_or_default()),
            ("RELAY_LOG_RETENTION", format!("{}s", t.log_retention.as_secs())),
        ]
    }

    pub fn conversations_queue(&self) -> &str {
        self.topology.conversations_queue.as_deref().expect("tests keep the downstream queue")
    }

    /// Waits for the next message on `queue` (failing the test after [`MESSAGE_WAIT`]) and acks it.
    pub async fn next_message(&self, queue: &str) -> lapin::message::Delivery {
        self.next_message_within(queue, MESSAGE_WAIT)
            .await
            .unwrap_or_else(|| panic!("no message on {queue} within {MESSAGE_WAIT:?}"))
    }

    pub async fn next_message_within(&self, queue: &str, wait: Duration) -> Option<lapin::message::Delivery> {
        let mut reader = self.reader.lock().await;
        let channel = match reader.as_ref() {
            Some(channel) if channel.status().connected() => channel.clone(),
            _ => {
                let channel = self.channel().await;
                // One message at a time: the rest stay ready in the queue for whatever reads next.
                channel.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
                reader.insert(channel).clone()
            }
        };
        let mut consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        let delivery = match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(Ok(delivery))) => Some(delivery),
            Ok(other) => panic!("consumer ended: {other:?}"),
            Err(_) => None,
        };
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await.expect("cancel");
        // One that arrived after the wait ended (the stream ends with the cancel) goes back.
        while let Some(Ok(late)) = consumer.next().await {
            late.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
        }
        if let Some(delivery) = &delivery {
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        delivery
    }

    /// Messages ready in `queue` (unacknowledged ones are not counted).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let channel = self.channel().await;
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let queue = channel.queue_declare(queue.into(), options, FieldTable::default()).await.expect("queue exists");
        let _ = channel.close(200, "done".into()).await;
        queue.message_count()
    }

    /// Ready messages and consumers of `queue`, as the queue's leader answers a passive declare.
    pub async fn counts(&self, queue: &str) -> (u32, u32) {
        let channel = self.channel().await;
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let queue = channel.queue_declare(queue.into(), options, FieldTable::default()).await.expect("queue exists");
        let _ = channel.close(200, "done".into()).await;
        (queue.message_count(), queue.consumer_count())
    }

    /// Message ids of everything in `queue`, taken off it.
    pub async fn drain_ids(&self, queue: &str) -> std::collections::HashSet<String> {
        let channel = self.channel().await;
        let mut ids = std::collections::HashSet::new();
        let options = lapin::options::BasicGetOptions { no_ack: true };
        while let Some(message) = channel.basic_get(queue.into(), options).await.expect("basic.get") {
            ids.insert(message.delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default());
        }
        let _ = channel.close(200, "done".into()).await;
        ids
    }

    fn names(&self) -> (Vec<String>, Vec<String>) {
        let t = &self.topology;
        let mut queues = vec![t.enrich_queue.clone(), t.dead_queue.clone()];
        queues.extend(t.conversations_queue.clone());
        queues.extend(t.conversations_log.clone());
        queues.extend(RETRY_TIERS.iter().map(|tier| t.retry_queue(*tier)));
        let exchanges = vec![t.events_exchange.clone(), t.conversations_exchange.clone(), t.dead_exchange.clone()];
        (queues, exchanges)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let (queues, exchanges) = self.names();
        let url = self.url.clone();
        // Drop cannot await; a thread with its own runtime deletes the names, even after a panic.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await else { return };
                for queue in queues {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
                    }
                }
                for exchange in exchanges {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ =
                            channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
                    }
                }
                let _ = connection.close(200, "cleanup".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// A RabbitMQ policy for the length of a test (the way an operator would set a limit).
pub struct Policy(String);

impl Policy {
    pub async fn set(queue: &str, definition: &str) -> Self {
        let pattern = format!("^{}$", regex_escape(queue));
        let status = tokio::process::Command::new("rabbitmqctl")
            .args(["set_policy", "--apply-to", "queues", queue, &pattern, definition])
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        Self(queue.to_owned())
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["clear_policy", &self.0]).output();
    }
}

/// A broker user of a test's own, with a password nothing else knows (so a test can look for it
/// anywhere), allowed everything on the vhost of [`amqp_url`]; deleted when dropped.
pub struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    pub async fn create() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let user = Self { name: format!("test-{}", &id[..12]), password: format!("pw-{id}") };
        let url = reqwest::Url::parse(&amqp_url()).expect("AMQP_URL is a URL");
        let vhost = match url.path().trim_start_matches('/') {
            "" | "%2f" | "%2F" => "/".to_owned(),
            named => named.to_owned(),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]).await;
        rabbitmqctl(&["set_permissions", "-p", &vhost, &user.name, ".*", ".*", ".*"]).await;
        user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// [`amqp_url`] with this user's credentials.
    pub fn url(&self) -> String {
        let mut url = reqwest::Url::parse(&amqp_url()).expect("AMQP_URL is a URL");
        url.set_username(&self.name).expect("an AMQP URL takes a user");
        url.set_password(Some(&self.password)).expect("an AMQP URL takes a password");
        url.to_string()
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["delete_user", &self.name]).output();
    }
}

async fn rabbitmqctl(args: &[&str]) {
    let output = tokio::process::Command::new("rabbitmqctl").args(args).output().await.expect("rabbitmqctl runs");
    assert!(output.status.success(), "rabbitmqctl {}: {}", args[0], String::from_utf8_lossy(&output.stderr));
}

fn regex_escape(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}
