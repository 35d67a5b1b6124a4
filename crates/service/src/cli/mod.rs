//! The command line: one file per command.

mod backfill;
mod check;
mod dead;
mod demo;
mod demo_output;
mod healthcheck;
mod mock_api;
mod reconcile;
mod register;
mod run;
mod send;
mod target;
mod window;

use clap::{Parser, Subcommand};

use crate::config::{LogArgs, LogFormat};

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
    /// Receiver and worker in one process (the container's default).
    // Boxed: it holds every setting of the receiver, the worker and the spool, several times
    // the size of any other command's.
    Run(Box<run::RunArgs>),
    /// Receiver only: verify webhooks and enqueue them.
    Serve(run::ServeArgs),
    /// Worker only: enrich queued events.
    Work(run::WorkArgs),
    /// Publish the finished conversations of a time window as enriched records (resumable); every
    /// project of RELAY_PROJECTS_FILE in turn, each with its own checkpoint, or --project NAME.
    Backfill(backfill::BackfillArgs),
    /// Dead letters: `list` them without removing any, `replay` them into the worker's queue.
    Dead(dead::DeadArgs),
    /// Put every finished call of a window that no webhook delivered into the worker's queue, once;
    /// every project of RELAY_PROJECTS_FILE in turn, or --project NAME.
    Reconcile(reconcile::ReconcileArgs),
    /// Check the configuration, the broker and the API key; print what to fix. Every project of
    /// RELAY_PROJECTS_FILE, or --project NAME.
    Check(check::CheckArgs),
    /// Register the webhook endpoint with PolyAI (prints the signing secret once); --list, --rotate ID.
    /// With RELAY_PROJECTS_FILE: one project's (--project NAME), its path and platform key.
    Register(register::RegisterArgs),
    /// Sign and POST events the way PolyAI does; a load generator with --count and --concurrency.
    Send(send::SendArgs),
    /// The one-command tour: mock API, embedded queue, receiver and worker, signed events.
    Demo(demo::DemoArgs),
    /// A local stand-in for PolyAI's APIs: conversations, audio, webhook endpoints, fault injection.
    MockApi(mock_api::MockApiArgs),
    /// GET /readyz once (2 s timeout): exit 0 on 2xx, 1 otherwise. For container health checks.
    Healthcheck(healthcheck::HealthcheckArgs),
}

impl Cli {
    /// Log format and default level: the demo talks to a person, so only warnings, readably.
    pub fn log_defaults(&self) -> (LogFormat, &'static str) {
        match self.command {
            Command::Demo(_) => (LogFormat::Pretty, "warn"),
            _ => (self.log.log_format, "info"),
        }
    }

    /// Whether this command exports traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: only the
    /// relay itself. A health check run every 10 s in the same container must not start an exporter.
    pub fn exports_traces(&self) -> bool {
        matches!(self.command, Command::Run(_) | Command::Serve(_) | Command::Work(_))
    }

    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => run::until_signal(args.as_ref()).await,
            Command::Serve(args) => run::until_signal(&args).await,
            Command::Work(args) => run::until_signal(&args).await,
            Command::Send(args) => args.execute().await,
            Command::Backfill(args) => args.execute().await,
            Command::Check(args) => args.execute().await,
            Command::Dead(args) => args.execute().await,
            Command::Reconcile(args) => args.execute().await,
            Command::Register(args) => args.execute().await,
            Command::MockApi(args) => args.execute().await,
            Command::Demo(args) => args.execute().await,
            Command::Healthcheck(args) => args.execute().await,
        }
    }
}
