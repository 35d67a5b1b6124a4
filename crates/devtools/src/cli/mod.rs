//! The development tools' commands: one file per command.

mod demo;
mod demo_output;
mod mock_api;
mod send;

use clap::Subcommand;
use futures_util::future::BoxFuture;

// Parsed once at start-up and moved straight into its command: the size of the largest
// variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign and POST events the way PolyAI does; a load generator with --count and --concurrency.
    Send(send::SendArgs),
    /// The one-command tour: mock API, embedded queue, receiver and worker, signed events.
    Demo(demo::DemoArgs),
    /// A local stand-in for PolyAI's APIs: conversations, audio, webhook endpoints, fault injection.
    MockApi(mock_api::MockApiArgs),
}

impl Command {
    /// Whether this command talks to a person rather than to a log collector: the demo.
    pub fn talks_to_a_person(&self) -> bool {
        matches!(self, Self::Demo(_))
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
            Self::Send(args) => args.execute().await,
            Self::Demo(args) => args.execute().await,
            Self::MockApi(args) => args.execute().await,
        }
    }
}
