//! The listeners' settings (design §10): the admin address and the limits every connection is held to.

use std::{net::SocketAddr, time::Duration};

use clap::Args;

use super::{
    args::{duration, size},
    ConfigError,
};

/// Limits each accepted connection is held to, so that clients without the secret cannot take
/// the capacity signed deliveries need.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request's headers are due this long after their first byte (or after the accept).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight closes after this long.
    pub idle_timeout: Duration,
    /// Bytes of a request line plus headers; more is answered `431`. Also hyper's read buffer
    /// cap, so with `max_connections` it bounds the memory a flood can take.
    pub max_header_bytes: usize,
    /// Open connections at most; at the cap a new one takes the place of the oldest with no
    /// verified request in flight.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            // Measured under a flood of 10,000 sockets in BENCHMARKS.md: these two keep the
            // relay under 64 MB whatever each socket sends.
            max_header_bytes: 8 << 10,
            max_connections: 1024,
        }
    }
}

/// Where the admin endpoints listen, and the connection limits of both listeners.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `/healthz`, `/readyz` and `/metrics`: kept off the public webhook listener.
    pub admin_listen: SocketAddr,
    pub limits: ConnectionLimits,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address of `/healthz`, `/readyz` and `/metrics` (port 0 picks one). Keep it off the internet.
    #[arg(long, env = "RELAY_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// A request's headers are due this long after their first byte (a silent new connection too).
    #[arg(long, env = "RELAY_HEADER_TIMEOUT", default_value = "5s", value_parser = duration("RELAY_HEADER_TIMEOUT"))]
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight closes after this long.
    #[arg(long, env = "RELAY_IDLE_TIMEOUT", default_value = "60s", value_parser = duration("RELAY_IDLE_TIMEOUT"))]
    pub idle_timeout: Duration,
    /// Request line and headers at most; more is answered 431.
    #[arg(long, env = "RELAY_MAX_HEADER_BYTES", default_value = "8KiB", value_parser = size("RELAY_MAX_HEADER_BYTES"))]
    pub max_header_bytes: usize,
    /// Open connections at most, per listener; at the cap a new one takes the place of the
    /// oldest with no verified request in flight.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
}

impl ServerArgs {
    pub fn settings(&self) -> Result<ServerSettings, ConfigError> {
        for (variable, value) in
            [("RELAY_HEADER_TIMEOUT", self.header_timeout), ("RELAY_IDLE_TIMEOUT", self.idle_timeout)]
        {
            if value.is_zero() {
                return Err(ConfigError::new(variable, format!("{variable} must be above zero")));
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("RELAY_MAX_CONNECTIONS", "RELAY_MAX_CONNECTIONS must be at least 1"));
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::new("RELAY_MAX_HEADER_BYTES", "RELAY_MAX_HEADER_BYTES must be at least 1KiB"));
        }
        Ok(ServerSettings {
            admin_listen: self.admin_listen,
            limits: ConnectionLimits {
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                max_header_bytes: self.max_header_bytes,
                max_connections: self.max_connections,
            },
        })
    }
}
