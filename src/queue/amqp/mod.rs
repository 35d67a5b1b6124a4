//! RabbitMQ backend: confirmed publishing on one connection, consuming on another, so a broker
//! that blocks publishers cannot stall consumption (design §5).

mod connect;
mod consumer;
mod convert;
mod publisher;
mod tls;
pub mod topology;

pub use connect::reach_each;
pub use consumer::AmqpSource;
pub use publisher::AmqpPublisher;

/// A lapin error as a log line; lapin's messages name hosts and AMQP codes, never credentials.
fn describe(error: &lapin::Error) -> String {
    error.to_string()
}
