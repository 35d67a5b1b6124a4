//! RabbitMQ backend: confirmed publishing on one connection, consuming on another, so a broker
//! that blocks publishers cannot stall consumption (design §5).

mod confirmed;
mod connect;
mod consumer;
pub(crate) mod convert;
pub mod exclusive;
pub mod log;
mod misdelivered;
mod publisher;
mod refusals;
mod seen_through;
pub mod session;
mod socket;
pub(crate) mod tls;
pub mod topology;
mod upkeep;

pub use confirmed::publish_confirmed;
pub use connect::reach_each;
pub use consumer::AmqpSource;
pub use publisher::AmqpPublisher;

/// One connection to the first of `target`'s addresses that answers, with its TLS settings, for
/// commands that talk to the broker directly. Errors name hosts, never URLs.
pub async fn connect(target: &crate::config::AmqpTarget, role: &str) -> Result<lapin::Connection, String> {
    // A command has no relay of its own to meter: its failures count in the process's recorder.
    let connector = connect::Connector::new(target, crate::telemetry::Metrics::global());
    connector.connect(role).await.map(|(connection, _)| connection)
}

/// A lapin error as a log line; lapin's messages name hosts and AMQP codes, never credentials.
pub(crate) fn describe(error: &lapin::Error) -> String {
    error.to_string()
}
