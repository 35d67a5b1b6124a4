//! Choosing and opening the queue backend: RabbitMQ when `AMQP_URL` is set, else the embedded
//! queue. Every command that needs a queue (`run`, `serve`, `work`, `backfill`, `check`) opens
//! it here, so they agree on what each setting means and on what each failure says.

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::{
    amqp::{AmqpPublisher, AmqpSource},
    embedded::{self, EmbeddedQueue},
    Metered, Publisher, Source,
};
use crate::{
    config::{AmqpTarget, BrokerSettings},
    telemetry::Metrics,
};

/// Why the queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Embedded(#[from] embedded::OpenError),
    /// The broker refused or failed the first connection (the reason names no credential).
    #[error("AMQP_URL: RabbitMQ at {host}: {reason}")]
    BrokerRefused { host: String, reason: String },
    #[error("AMQP_URL: RabbitMQ at {host} did not answer within {}s", waited.as_secs())]
    BrokerSilent { host: String, waited: Duration },
}

/// The queue in use, behind the traits the receiver and the worker see.
pub struct Backend {
    /// Publishes with confirms, each one counted in `relay_publish_confirms_total`.
    pub publisher: Arc<dyn Publisher>,
    /// Where the worker consumes.
    pub source: Arc<dyn Source>,
    /// The RabbitMQ publisher, to wait for its connection; `None` on the embedded queue.
    amqp: Option<(AmqpPublisher, String)>,
    /// The embedded queue, whose store keeps the reconciliation ledger; `None` on RabbitMQ.
    pub embedded: Option<EmbeddedQueue>,
}

impl Backend {
    /// Opens the backend `broker` names. RabbitMQ is connected in the background (until
    /// `shutdown`): until it answers, publishes fail with `Unavailable`.
    pub fn open(broker: &BrokerSettings, metrics: Metrics, shutdown: CancellationToken) -> Result<Self, OpenError> {
        let topology = &broker.topology;
        match &broker.amqp_url {
            Some(url) => {
                let amqp = AmqpPublisher::start(url.clone(), topology.clone(), metrics.clone(), shutdown);
                Ok(Self {
                    source: Arc::new(AmqpSource::new(url.clone(), topology.enrich_queue.clone(), metrics.clone())),
                    publisher: Arc::new(Metered::new(Arc::new(amqp.clone()), metrics)),
                    amqp: Some((amqp, broker_host(url))),
                    embedded: None,
                })
            }
            None => {
                let queue = EmbeddedQueue::open(&broker.data_dir, topology.delivery_limit)?;
                queue.set_ledger_retention(topology.log_retention);
                Ok(Self {
                    publisher: Arc::new(Metered::new(Arc::new(queue.clone()), metrics)),
                    source: Arc::new(queue.clone()),
                    amqp: None,
                    embedded: Some(queue),
                })
            }
        }
    }

    /// Whether this is RabbitMQ (rather than the embedded queue).
    pub fn is_amqp(&self) -> bool {
        self.amqp.is_some()
    }

    /// Resolves once the broker is connected and the topology declared (at once when embedded).
    pub async fn wait_connected(&self) {
        if let Some((amqp, _)) = &self.amqp {
            amqp.wait_connected().await;
        }
    }

    /// The first connection attempt's outcome, within `limit`: for commands that report a broker
    /// they cannot reach rather than wait for it.
    pub async fn first_connection(&self, limit: Duration) -> Result<(), OpenError> {
        let Some((amqp, host)) = &self.amqp else { return Ok(()) };
        match tokio::time::timeout(limit, amqp.first_connection()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(OpenError::BrokerRefused { host: host.clone(), reason }),
            Err(_) => Err(OpenError::BrokerSilent { host: host.clone(), waited: limit }),
        }
    }

    /// Where the broker is, for messages (`host:port`, never the credentials).
    pub fn broker_host(&self) -> Option<&str> {
        self.amqp.as_ref().map(|(_, host)| host.as_str())
    }
}

/// `host:port` of each address, for messages: the URLs themselves hold a password.
fn broker_host(target: &AmqpTarget) -> String {
    let host = |url: &SecretString| {
        url::Url::parse(url.expose_secret())
            .ok()
            .map(|u| {
                let port = u.port().unwrap_or(if u.scheme() == "amqps" { 5671 } else { 5672 });
                format!("{}:{port}", u.host_str().unwrap_or("?"))
            })
            .unwrap_or_else(|| "the broker".into())
    };
    target.addresses.iter().map(host).collect::<Vec<_>>().join(", ")
}
