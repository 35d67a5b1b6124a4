//! The service's commands: one file per command. The binary offers these beside the development
//! tools' (crates/devtools), under one `polyai-relay` command line.

mod backfill;
mod check;
mod dead;
mod healthcheck;
mod log;
mod reconcile;
mod register;
mod run;
pub mod stdout;
mod target;
mod window;

use clap::Subcommand;
use futures_util::future::BoxFuture;

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
    /// Dead letters: `list` them without removing any, `replay` them where they were going.
    Dead(dead::DeadArgs),
    /// The conversations log: `replay` the events of a window that never became a record into the
    /// worker's queue (after that queue was deleted or purged).
    Log(log::LogArgs),
    /// Put every finished call of a window that no webhook delivered into the worker's queue, once;
    /// every project of RELAY_PROJECTS_FILE in turn, or --project NAME.
    Reconcile(reconcile::ReconcileArgs),
    /// Check the configuration, the broker and the API key; print what to fix. Every project of
    /// RELAY_PROJECTS_FILE, or --project NAME.
    Check(check::CheckArgs),
    /// Register the webhook endpoint with PolyAI (prints the signing secret once); --list, --rotate ID.
    /// With RELAY_PROJECTS_FILE: one project's (--project NAME), its path and platform key.
    Register(register::RegisterArgs),
    /// GET /readyz once (2 s timeout): exit 0 on 2xx, 1 otherwise. For container health checks.
    Healthcheck(healthcheck::HealthcheckArgs),
}

impl Command {
    /// Whether this command exports traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: only the
    /// relay itself. A health check run every 10 s in the same container must not start an exporter.
    pub fn exports_traces(&self) -> bool {
        matches!(self, Self::Run(_) | Self::Serve(_) | Self::Work(_))
    }

    /// Runs the command: one boxed future, made here and never inlined. An async fn's body is
    /// compiled again in every crate that awaits it, with all it awaits in turn; awaited from the
    /// binary, that was the whole service compiled a second time, on a clean release build's
    /// serial end (BENCHMARKS.md).
    #[inline(never)]
    pub fn execute(self) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(self.run())
    }

    async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Run(args) => run::until_signal(args.as_ref()).await,
            Self::Serve(args) => run::until_signal(&args).await,
            Self::Work(args) => run::until_signal(&args).await,
            Self::Backfill(args) => args.execute().await,
            Self::Check(args) => args.execute().await,
            Self::Dead(args) => args.execute().await,
            Self::Log(args) => args.execute().await,
            Self::Reconcile(args) => args.execute().await,
            Self::Register(args) => args.execute().await,
            Self::Healthcheck(args) => args.execute().await,
        }
    }
}
