//! The one command line: the service's commands and the development tools', side by side.

use clap::{Parser, Subcommand};
use polyai_relay::config::{LogArgs, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "polyai-relay",
    version,
    about = "PolyAI webhooks in, enriched conversation records out, nothing lost"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up and moved straight into its command: the size of the largest
// variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    // The relay's own commands (crates/service).
    #[command(flatten)]
    Service(polyai_relay::cli::Command),
    // `send`, `demo`, `mock-api` (crates/devtools).
    #[command(flatten)]
    DevTools(polyai_relay_devtools::cli::Command),
}

impl Cli {
    /// Log format and default level: a person reading the demo sees only warnings, readably.
    pub fn log_defaults(&self) -> (LogFormat, &'static str) {
        match &self.command {
            Command::DevTools(command) if command.talks_to_a_person() => (LogFormat::Pretty, "warn"),
            _ => (self.log.log_format, "info"),
        }
    }

    /// Whether this command exports traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: only the
    /// relay itself, never a development tool.
    pub fn exports_traces(&self) -> bool {
        matches!(&self.command, Command::Service(command) if command.exports_traces())
    }

    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Service(command) => command.execute().await,
            Command::DevTools(command) => command.execute().await,
        }
    }
}
