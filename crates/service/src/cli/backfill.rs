//! `backfill`: publish the conversations of a time window as enriched records. With
//! `RELAY_PROJECTS_FILE`, every project in turn (or only `--project NAME`), each with its own
//! key and its own checkpoint, so a run resumes project by project.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use time::OffsetDateTime;

use super::stdout;
use super::{
    target::{ChosenApis, ProjectsTarget},
    window::WindowArgs,
};
use crate::{
    backfill::{self, BackfillConfig, BackfillKey, BackfillSummary, CheckpointFile, Progress},
    config::{ApiSettings, BrokerSettings},
    polyai::{PolyaiClient, SettingNames},
    queue::{Backend, Publisher},
    shutdown,
    telemetry::Metrics,
};

/// How long the first connection to RabbitMQ may take.
const BROKER_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    window: WindowArgs,
    /// List and count without publishing.
    #[arg(long)]
    dry_run: bool,
    /// Conversations per list request (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
    /// Checkpoint file; RELAY_DATA_DIR/backfill-checkpoint.json by default, and
    /// RELAY_DATA_DIR/backfill-checkpoint.{project}.json for each project of RELAY_PROJECTS_FILE.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    target: ProjectsTarget,
}

impl BackfillArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let mut chosen = self.target.apis()?;
        chosen.leave_out_unforwarded(&self.window.client_env)?;
        let ChosenApis { projects, from_file, .. } = chosen;
        let several = projects.len() > 1;
        anyhow::ensure!(
            self.checkpoint.is_none() || !several,
            "--checkpoint names one file, and this run backfills {} projects: pick one with --project, or leave --checkpoint out (each project keeps RELAY_DATA_DIR/backfill-checkpoint.{{project}}.json)",
            projects.len()
        );
        let broker = self.target.broker.settings()?;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let (start_time, end_time) = self.window.bounds(now, now)?;
        anyhow::ensure!(start_time < end_time, "--since must be before --until");
        let configs: Vec<BackfillConfig> = projects
            .iter()
            .map(|api| BackfillConfig {
                key: BackfillKey {
                    since: self.window.since.clone(),
                    until: self.window.until.clone(),
                    client_env: self.window.client_env.clone(),
                    account_id: api.account_id.clone(),
                    project_id: api.project_id.clone(),
                },
                start_time,
                end_time,
                page_size: self.page_size,
                dry_run: self.dry_run,
                retry_base_delay: Duration::from_secs(1),
                checkpoint: self.checkpoint_of(api, &broker, from_file),
                keep_finished: several,
                setting_names: if from_file { SettingNames::ProjectFields } else { SettingNames::Variables },
            })
            .collect();
        let shutdown = shutdown::on_signal();
        let broker_shutdown = tokio_util::sync::CancellationToken::new();
        let publisher: Option<Arc<dyn Publisher>> = if self.dry_run {
            None
        } else {
            let backend = Backend::open(&broker, Metrics::global(), broker_shutdown.clone())?;
            backend.first_connection(BROKER_PATIENCE).await?;
            Some(backend.publisher)
        };
        let progress = Progress::for_stderr();
        let mut failed = Vec::new();
        let mut outcome = Ok(());
        for (api, config) in projects.iter().zip(&configs) {
            let prefix = if from_file { format!("project `{}`: ", api.project) } else { String::new() };
            let client = PolyaiClient::new(api)?;
            match backfill::run(config, &client, publisher.as_deref(), &progress, &shutdown).await {
                Ok(summary) => self.print(&prefix, &summary),
                // One project's failure (its key refused, say) leaves the others to run; an
                // interruption stops the whole run.
                Err(error) if several && !shutdown.is_cancelled() => {
                    progress.note(&format!("{prefix}{error:#}"));
                    failed.push(api.project.to_string());
                }
                Err(error) => {
                    outcome = Err(if from_file { error.context(format!("project `{}`", api.project)) } else { error });
                    break;
                }
            }
        }
        progress.finish();
        broker_shutdown.cancel();
        outcome?;
        anyhow::ensure!(
            failed.is_empty(),
            "backfilling project(s) {} failed; run the same command again: the finished projects list only what the window gained since, the others resume from their checkpoints",
            failed.join(", ")
        );
        if several && !self.dry_run {
            // Every project is done: their kept checkpoints have nothing left to resume.
            for config in &configs {
                CheckpointFile::new(config.checkpoint.clone()).remove()?;
            }
        }
        Ok(())
    }

    /// `--checkpoint`, else one file per project in the data directory (today's name without
    /// a projects file).
    fn checkpoint_of(&self, api: &ApiSettings, broker: &BrokerSettings, from_file: bool) -> PathBuf {
        match (&self.checkpoint, from_file) {
            (Some(path), _) => path.clone(),
            (None, false) => broker.data_dir.join("backfill-checkpoint.json"),
            (None, true) => broker.data_dir.join(format!("backfill-checkpoint.{}.json", api.project)),
        }
    }

    fn print(&self, prefix: &str, summary: &BackfillSummary) {
        let verb = if self.dry_run { "would publish" } else { "published" };
        let how = how(summary);
        let too_large = match summary.too_large.len() {
            0 => String::new(),
            n => format!(", {n} not published (record over RELAY_BROKER_MAX_MESSAGE)"),
        };
        stdout::line(format_args!(
            "{prefix}{} pages, {} conversations listed, {verb} {}, skipped {} in progress{}{too_large}{how}",
            summary.pages,
            summary.seen,
            summary.published,
            summary.skipped_in_progress,
            if summary.duplicates > 0 { format!(", {} listed twice", summary.duplicates) } else { String::new() },
        ));
    }
}

/// What the run made of an earlier run's checkpoint, if it found one: the summary names the
/// windows, since the counts then span the earlier run's too.
fn how(summary: &BackfillSummary) -> String {
    let Some(earlier) = summary.earlier else { return String::new() };
    let earlier = if summary.finished_earlier {
        format!("window {earlier} finished by an earlier run")
    } else {
        format!("resumed window {earlier} of an earlier run")
    };
    match summary.then {
        Some(then) => format!(" ({earlier}, then listed {then})"),
        None => format!(" ({earlier})"),
    }
}
