//! The development tools' commands: one file per command.

mod demo;
mod demo_output;
mod mock_api;
mod send;

use clap::Subcommand;

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

    pub async fn execute(self) -> anyhow::Result<()> {
        match self {
            Self::Send(args) => args.execute().await,
            Self::Demo(args) => args.execute().await,
            Self::MockApi(args) => args.execute().await,
        }
    }
}
