//! `reconcile`: one pass over a window, putting every finished call the relay does not know
//! into the worker's queue; with `RELAY_PROJECTS_FILE`, one pass per project, in the file's
//! order, each listing with its project's key (or only `--project NAME`'s).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use time::OffsetDateTime;

use super::stdout;
use super::{
    target::{ChosenApis, ProjectsTarget},
    window::WindowArgs,
};
use crate::{
    config::{check_within_retention, parse_duration},
    polyai::PolyaiClient,
    queue::embedded::EmbeddedQueue,
    reconcile::{self, AmqpLedger, EmbeddedLedger, Ledger, Pass, PassSummary, ReconcileError},
    shutdown,
    telemetry::Metrics,
};

#[derive(Debug, Args)]
// The window's help in reconcile's words: it lists calls, and its `--until` has its own default.
#[command(
    mut_arg("since", |a| a.help("Start of the window (calls that started then or later): a duration ago (`24h`) or an RFC 3339 time")),
    mut_arg("until", |a| a.help("End of the window, in the same forms; by default now minus the settle time")),
    mut_arg("client_env", |a| a.help("Which environment's calls")),
)]
pub struct ReconcileArgs {
    #[command(flatten)]
    window: WindowArgs,
    /// Calls that finished more recently than this are left for their webhook.
    #[arg(long, env = "RELAY_RECONCILE_SETTLE", default_value = "10m", value_parser = settle)]
    settle: Duration,
    /// List what would be reconciled; put nothing into the queue.
    #[arg(long)]
    dry_run: bool,
    /// Conversations per list request (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
    #[command(flatten)]
    target: ProjectsTarget,
}

fn settle(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| format!("RELAY_RECONCILE_SETTLE: {e}"))
}

impl ReconcileArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        // Lines name their project only when there is a file to name projects.
        let mut chosen = self.target.apis()?;
        chosen.leave_out_unforwarded(&self.window.client_env)?;
        let ChosenApis { projects, from_file: named, .. } = chosen;
        let projects = projects.iter().map(PolyaiClient::new).collect::<Result<Vec<_>, _>>()?;
        let broker = self.target.broker.settings()?;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let finished_before = now - self.settle;
        let (start, end) = self.window.bounds(now, finished_before)?;
        anyhow::ensure!(start < end, "--since must be before --until (which is now minus the settle time by default)");
        let reach = (now - start).try_into().unwrap_or_default();
        check_within_retention("--since", reach, broker.topology.log_retention)?;
        let pass = Pass {
            start,
            end,
            finished_before,
            client_env: self.window.client_env.clone(),
            page_size: self.page_size,
            dry_run: self.dry_run,
        };
        let stop = shutdown::on_signal();
        match &broker.amqp_url {
            Some(target) => {
                let ledger = AmqpLedger::open(target, broker.topology.clone()).await.context("AMQP_URL")?;
                if !ledger.try_lock().await? {
                    ledger.close().await;
                    anyhow::bail!("another reconciler is running (a worker with RELAY_RECONCILE_EVERY, or another `reconcile`); it covers this already");
                }
                let result = self.each_project(&pass, &projects, named, &ledger, &stop).await;
                ledger.close().await;
                result
            }
            None => {
                // The embedded queue belongs to one process: stop the relay first (its own loop,
                // RELAY_RECONCILE_EVERY, does the same while it runs).
                let queue = EmbeddedQueue::open(&broker.data_dir, broker.topology.delivery_limit)?;
                let ledger = EmbeddedLedger::new(queue, broker.topology.log_retention);
                self.each_project(&pass, &projects, named, &ledger, &stop).await
            }
        }
    }

    /// One pass per project, in order, through the one ledger. With several projects, one whose
    /// list fails (its key refused, say) is reported and the others go on; the run fails at the
    /// end. A failing ledger fails the run at once: it is every project's.
    async fn each_project(
        &self,
        pass: &Pass,
        projects: &[PolyaiClient],
        named: bool,
        ledger: &dyn Ledger,
        stop: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for client in projects {
            let prefix = if named { format!("project `{}`: ", client.project()) } else { String::new() };
            match reconcile::reconcile(pass, client, ledger, stop, &Metrics::global()).await {
                Ok(summary) => self.print(&prefix, &summary),
                Err(error @ ReconcileError::List(_)) if projects.len() > 1 => {
                    eprintln!("{prefix}{error}");
                    failed.push(client.project().to_string());
                }
                Err(error) => return Err(anyhow::anyhow!("{prefix}{error}")),
            }
        }
        anyhow::ensure!(
            failed.is_empty(),
            "reconciling project(s) {} failed (the others are done); run it again with --project NAME once fixed",
            failed.join(", ")
        );
        Ok(())
    }

    fn print(&self, prefix: &str, summary: &PassSummary) {
        let verb = if self.dry_run { "would reconcile" } else { "reconciled" };
        if self.dry_run {
            for id in &summary.ids {
                stdout::line(format_args!("{prefix}{verb} {id}"));
            }
        }
        stdout::line(format_args!(
            "{prefix}{} conversations listed: {verb} {}, {} already known, {} in progress, {} finished within the settle time, {} in other environments, {} refused and left to PolyAI's retries",
            summary.listed, summary.reconciled, summary.known, summary.in_progress, summary.settling, summary.other_environment, summary.left_to_polyai
        ));
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    use super::*;

    fn help(command: &Command, flag: &str) -> String {
        command.get_arguments().find(|a| a.get_id() == flag).and_then(|a| a.get_help()).unwrap().to_string()
    }

    #[test]
    fn the_window_is_worded_for_calls_and_the_settle_time() {
        let reconcile = ReconcileArgs::augment_args(Command::new("reconcile"));
        assert_eq!(
            help(&reconcile, "until"),
            "End of the window, in the same forms; by default now minus the settle time"
        );
        assert_eq!(help(&reconcile, "client_env"), "Which environment's calls");
        assert!(help(&reconcile, "since").starts_with("Start of the window (calls that started then or later)"));
        let backfill = WindowArgs::augment_args(Command::new("backfill"));
        assert_eq!(help(&backfill, "until"), "End of the window, in the same forms; now when omitted");
    }
}
