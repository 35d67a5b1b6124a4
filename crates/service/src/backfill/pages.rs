//! Paging one window of a backfill to its end: list, publish each finished conversation once,
//! and save the checkpoint after every page so that an interruption resumes at the next one.

use std::{collections::HashSet, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{publish, BackfillConfig, BackfillSummary, Checkpoint, CheckpointFile, Progress, Window};
use crate::{
    backoff::Backoff,
    polyai::{advice_for, listing_wait_after_429, ApiError, ListPage, ListRequest, PolyaiClient, Visited},
    queue::Publisher,
};

/// Transient list failures tolerated in a row before the run stops (resumable).
const LIST_ATTEMPTS: u32 = 5;
/// The longest wait between two list attempts.
const LIST_RETRY_MAX: Duration = Duration::from_secs(30);

/// What one run pages with, window after window.
pub(super) struct Pager<'a> {
    pub config: &'a BackfillConfig,
    pub client: &'a PolyaiClient,
    pub publisher: Option<&'a dyn Publisher>,
    pub progress: &'a Progress,
    pub shutdown: &'a CancellationToken,
    pub file: &'a CheckpointFile,
}

impl Pager<'_> {
    /// Pages `state`'s window from where it stands to its last page. `summary` counts what this
    /// run sees; `published_now` spans the whole run, so a conversation listed twice (pages
    /// shifting under new calls) is published once.
    pub async fn to_end(
        &self,
        state: &mut Checkpoint,
        summary: &mut BackfillSummary,
        published_now: &mut HashSet<String>,
    ) -> anyhow::Result<()> {
        let Window { start, end } = Window::of(state)?;
        let mut visited = Visited::default();
        loop {
            if self.shutdown.is_cancelled() {
                anyhow::bail!("interrupted; run the same command again to resume from {}", self.file.path().display());
            }
            let request = ListRequest {
                start_time: Some(start),
                end_time: Some(end),
                client_env: Some(self.config.key.client_env.clone()),
                limit: Some(self.config.page_size),
                cursor: state.cursor.clone(),
                offset: state.offset,
            };
            let page = self.list_page(&request).await?;
            for conversation in &page.conversations {
                summary.seen += 1;
                if conversation.in_progress {
                    state.skipped_in_progress += 1;
                    continue;
                }
                if !published_now.insert(conversation.id.clone()) {
                    summary.duplicates += 1;
                    continue;
                }
                if let Some(publisher) = self.publisher {
                    if let Err(error) = publish(publisher, self.client.project(), conversation, self.shutdown).await? {
                        self.progress.note(&format!("{}: not published: {error}", conversation.id));
                        summary.too_large.push(conversation.id.clone());
                        continue;
                    }
                }
                state.published += 1;
            }
            state.pages += 1;
            self.progress.page(state.pages, summary.seen, state.published);
            (state.cursor, state.offset) = page.next(&request, &mut visited).position();
            if state.cursor.is_none() && state.offset.is_none() {
                return Ok(());
            }
            if !self.config.dry_run {
                self.file.save(state)?;
            }
        }
    }

    /// One page, waiting out 429s and retrying transient failures a few times.
    async fn list_page(&self, request: &ListRequest) -> anyhow::Result<ListPage> {
        let (mut failures, mut limited) = (0, 0);
        loop {
            let wait = match self.client.list(request).await {
                Ok(page) => return Ok(page),
                Err(ApiError::RateLimited { retry_after }) => {
                    limited += 1;
                    let wait = listing_wait_after_429(retry_after, limited);
                    let asked =
                        retry_after.map(|asked| format!(" (Retry-After: {}s)", asked.as_secs())).unwrap_or_default();
                    self.progress.note(&format!("rate limited{asked}: waiting {}s", wait.as_secs_f64()));
                    wait
                }
                Err(error @ (ApiError::Server { .. } | ApiError::Transport(_))) if failures + 1 < LIST_ATTEMPTS => {
                    failures += 1;
                    self.progress.note(&format!("{error}; retrying"));
                    Backoff::new(self.config.retry_base_delay, LIST_RETRY_MAX).delay(failures)
                }
                Err(error) => {
                    anyhow::bail!(
                        "listing conversations failed: {error}\n{}",
                        advice_for(&error, self.config.setting_names)
                    )
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => anyhow::bail!("interrupted while waiting to retry"),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
