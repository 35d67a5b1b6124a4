//! `log replay`: events the conversations log holds that never became a record, back into the
//! worker's queue.

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use super::{stdout, window::instant};
use crate::{
    config::BrokerArgs,
    log_replay::{LogReplay, LogReplayRequest},
    queue::ledger::conversation_of,
    shutdown,
};

#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Put the events the relay took in a window, and that have no record yet, back into the
    /// worker's queue with their own ids: after the worker's queue was deleted or purged.
    Replay {
        /// Events the relay took from then on: a duration ago (`2h`) or an RFC 3339 time.
        #[arg(long)]
        since: String,
        /// Up to then, in the same forms; now when omitted.
        #[arg(long)]
        until: Option<String>,
        /// Why, recorded on each replayed event (header x-relay-replay-reason).
        #[arg(long)]
        reason: Option<String>,
        /// List what would be replayed; put nothing into the queue.
        #[arg(long)]
        dry_run: bool,
    },
}

impl LogArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let LogCommand::Replay { since, until, reason, dry_run } = self.command;
        let now = OffsetDateTime::now_utc();
        let since = instant("--since", &since, now)?;
        let until = until.map(|u| instant("--until", &u, now)).transpose()?.unwrap_or(now);
        anyhow::ensure!(since < until, "--since must be before --until (now when omitted)");
        let broker = self.broker.settings()?;
        anyhow::ensure!(
            broker.topology.conversations_log.is_some(),
            "RELAY_CONVERSATIONS_LOG is off: there is no log to replay from"
        );
        let Some(target) = &broker.amqp_url else {
            anyhow::bail!(
                "`log replay` reads RabbitMQ's conversations log: set AMQP_URL. The embedded queue keeps its \
                 events and its ledger in one file, so it has no queue to lose apart from them"
            );
        };
        let reach = now - since;
        let retention = broker.topology.log_retention;
        if reach > retention {
            // Not refused, unlike a reconciliation this far back: a replay sends nothing twice for
            // it, it only cannot see what the stream no longer holds.
            eprintln!(
                "warning: --since reaches back {}, further than the log keeps events (RELAY_LOG_RETENTION, {}): \
                 older ones are gone from it and cannot be replayed",
                humantime::format_duration(std::time::Duration::from_secs(reach.whole_seconds().max(0) as u64)),
                humantime::format_duration(retention),
            );
        }
        let replay = LogReplay::open(target, broker.topology.clone()).await?;
        let request = LogReplayRequest { since, until, reason, dry_run };
        let result = replay.run(&request, &shutdown::on_signal()).await;
        replay.close().await;
        let summary = result.map_err(|error| anyhow::anyhow!("the log could not be replayed: {error}"))?;
        let verb = if dry_run { "would replay" } else { "replayed" };
        if dry_run {
            for event in &summary.replayed {
                let conversation = conversation_of(&event.body).unwrap_or_else(|| "-".into());
                stdout::line(format_args!("{verb} {} {} {conversation}", event.message_id, event.event_type));
            }
        }
        stdout::line(format_args!("{verb} {}, already enriched {}", summary.replayed.len(), summary.already_enriched));
        if summary.interrupted {
            anyhow::bail!(
                "interrupted; run it again to replay the rest (the ones replayed and not yet enriched come again)"
            );
        }
        Ok(())
    }
}
