//! `backfill`: publish the conversations of a time window as enriched records.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    backfill::{self, BackfillConfig, BackfillKey, Progress},
    config::{parse_duration, ApiArgs, BrokerArgs},
    polyai::PolyaiClient,
    queue::{Backend, Publisher},
    shutdown,
    telemetry::Metrics,
};

/// How long the first connection to RabbitMQ may take.
const BROKER_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Start of the window: a duration ago (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long)]
    since: String,
    /// End of the window, in the same forms; now when omitted.
    #[arg(long)]
    until: Option<String>,
    /// Which environment's conversations.
    #[arg(long, default_value = "live", value_parser = ["live", "sandbox", "pre-release"])]
    client_env: String,
    /// List and count without publishing.
    #[arg(long)]
    dry_run: bool,
    /// Conversations per list request (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
    /// Checkpoint file; RELAY_DATA_DIR/backfill-checkpoint.json by default.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// `24h` means 24 hours before `now`; otherwise an RFC 3339 time.
pub(super) fn instant(flag: &str, text: &str, now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    let ago = parse_duration(text).map_err(|e| anyhow::anyhow!("{flag}: {e}, or an RFC 3339 time"))?;
    Ok(now - ago)
}

impl BackfillArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let api = self.api.settings()?;
        let broker = self.broker.settings()?;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let start_time = instant("--since", &self.since, now)?;
        let end_time = self.until.as_deref().map(|u| instant("--until", u, now)).transpose()?.unwrap_or(now);
        anyhow::ensure!(start_time < end_time, "--since must be before --until");
        let config = BackfillConfig {
            key: BackfillKey {
                since: self.since.clone(),
                until: self.until.clone(),
                client_env: self.client_env.clone(),
                account_id: api.account_id.clone(),
                project_id: api.project_id.clone(),
            },
            start_time,
            end_time,
            page_size: self.page_size,
            dry_run: self.dry_run,
            retry_base_delay: Duration::from_secs(1),
            checkpoint: self.checkpoint.clone().unwrap_or_else(|| broker.data_dir.join("backfill-checkpoint.json")),
        };
        let client = PolyaiClient::new(&api)?;
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
        let result = backfill::run(&config, &client, publisher.as_deref(), &progress, &shutdown).await;
        progress.finish();
        broker_shutdown.cancel();
        let summary = result?;
        let verb = if self.dry_run { "would publish" } else { "published" };
        println!(
            "{} pages, {} conversations listed, {verb} {}, skipped {} in progress{}{}",
            summary.pages,
            summary.seen,
            summary.published,
            summary.skipped_in_progress,
            if summary.duplicates > 0 { format!(", {} listed twice", summary.duplicates) } else { String::new() },
            if summary.resumed { " (resumed)" } else { "" },
        );
        Ok(())
    }
}
