//! The command line: one file per command.

mod healthcheck;
mod mock_api;
mod run;
mod send;

use clap::{Parser, Subcommand};

use crate::config::LogArgs;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receiver and worker in one process (the container's default).
    Run(run::RunArgs),
    /// Receiver only: verify webhooks and enqueue them.
    Serve(run::ServeArgs),
    /// Worker only: enrich queued events.
    Work(run::WorkArgs),
    /// Sign and POST events the way PolyAI does; a load generator with --count and --concurrency.
    Send(send::SendArgs),
    /// A local stand-in for PolyAI's APIs: conversations, audio, webhook endpoints, fault injection.
    MockApi(mock_api::MockApiArgs),
    /// GET /readyz once (2 s timeout): exit 0 on 2xx, 1 otherwise. For container health checks.
    Healthcheck(healthcheck::HealthcheckArgs),
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => args.execute().await,
            Command::Serve(args) => args.execute().await,
            Command::Work(args) => args.execute().await,
            Command::Send(args) => args.execute().await,
            Command::MockApi(args) => args.execute().await,
            Command::Healthcheck(args) => args.execute().await,
        }
    }
}
