//! `dead list` and `dead replay`: what failed for good, and sending it back to the worker.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::stdout;
use crate::{
    config::BrokerArgs,
    dead::{AmqpDeadLetters, DeadLetters, EmbeddedDeadLetters, ReplayProgress, ReplayRequest, Selection},
    shutdown,
};

#[derive(Debug, Args)]
pub struct DeadArgs {
    #[command(subcommand)]
    command: DeadCommand,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Subcommand)]
enum DeadCommand {
    /// List the dead letters, oldest first, without removing any.
    List {
        /// One JSON object a line: event_id, event_type, conversation_id, error, attempts, dead_at.
        #[arg(long)]
        json: bool,
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Send dead letters back where they were going, their attempts reset: an event to the
    /// worker's queue, a rescued record to the conversations exchange.
    Replay {
        /// Every dead letter.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// The dead letters with these event ids.
        #[arg(long, num_args = 1..)]
        id: Vec<String>,
        /// Why, recorded on each replayed event (header x-relay-replay-reason).
        #[arg(long)]
        reason: Option<String>,
        /// Count what would be replayed; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl DeadArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let broker = self.broker.settings()?;
        let store: Box<dyn DeadLetters> = match &broker.amqp_url {
            Some(target) => Box::new(AmqpDeadLetters::open(target, broker.topology.clone()).await.context("AMQP_URL")?),
            None => Box::new(EmbeddedDeadLetters::new(broker.data_dir.clone(), broker.topology.delivery_limit)),
        };
        let result = self.command.run(store.as_ref()).await;
        store.close().await;
        result
    }
}

impl DeadCommand {
    async fn run(self, store: &dyn DeadLetters) -> anyhow::Result<()> {
        match self {
            Self::List { json, limit } => {
                let letters = store.list(limit).await?;
                for letter in &letters {
                    if json {
                        stdout::line(format_args!("{}", serde_json::to_string(letter)?));
                    } else {
                        stdout::line(format_args!("{}", letter.line()));
                    }
                }
                if !json {
                    eprintln!("{} dead letters shown", letters.len());
                }
                Ok(())
            }
            Self::Replay { all, id, reason, dry_run } => {
                let selection = if all { Selection::All } else { Selection::Ids(id) };
                let request = ReplayRequest { selection, reason, dry_run };
                let progress = ReplayProgress::for_stderr();
                let stop = shutdown::on_signal();
                let result = store.replay(&request, &progress, &stop).await;
                progress.finish();
                let summary = result?;
                let verb = if dry_run { "would replay" } else { "replayed" };
                stdout::line(format_args!("{verb} {}, left {}", summary.replayed, summary.left));
                if summary.interrupted {
                    anyhow::bail!("interrupted; run it again to replay the rest");
                }
                Ok(())
            }
        }
    }
}
