//! RabbitMQ backend: confirmed publishing on one connection, consuming on another, so a broker
//! that blocks publishers cannot stall consumption (design §5).

mod consumer;
mod convert;
mod publisher;
pub mod topology;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::telemetry::names;

pub use consumer::AmqpSource;
pub use publisher::AmqpPublisher;

/// Opens a connection named for the management UI. Errors never include the URL: it holds a password.
async fn connect(url: &SecretString, role: &str) -> Result<Connection, String> {
    let properties = ConnectionProperties::default().with_connection_name(format!("polyai-relay {role}").into());
    let result =
        match tokio::time::timeout(Duration::from_secs(10), Connection::connect(url.expose_secret(), properties)).await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(describe(&error)),
            Err(_) => Err("connection attempt timed out after 10s".to_owned()),
        };
    if result.is_err() {
        metrics::counter!(names::BROKER_CONNECT_FAILURES, "role" => role.to_owned()).increment(1);
    }
    result
}

/// A lapin error as a log line; lapin's messages name hosts and AMQP codes, never credentials.
fn describe(error: &lapin::Error) -> String {
    error.to_string()
}
