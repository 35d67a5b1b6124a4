//! Dead letters of the embedded queue: `dead.jsonl` read as a file (removing nothing), and a
//! replay that commits each event to the queue before its line leaves the file.

use std::{collections::HashSet, path::PathBuf};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{
    replay_destination, replayed, DeadError, DeadLetter, DeadLetters, ReplayProgress, ReplayRequest, ReplaySummary,
};
use crate::queue::{
    embedded::{DeadLine, EmbeddedQueue},
    Publisher,
};

/// Lines replayed between two rewrites of `dead.jsonl`: what a kill can double, at most.
const CHUNK: usize = 50;

pub struct EmbeddedDeadLetters {
    dir: PathBuf,
    delivery_limit: u32,
}

fn store(error: impl std::fmt::Display) -> DeadError {
    DeadError::Store(error.to_string())
}

impl EmbeddedDeadLetters {
    pub fn new(dir: PathBuf, delivery_limit: u32) -> Self {
        Self { dir, delivery_limit }
    }

    fn read(&self) -> Result<Vec<DeadLine>, DeadError> {
        EmbeddedQueue::dead_letters_in(&self.dir).map_err(store)
    }
}

fn letter(line: &DeadLine) -> DeadLetter {
    DeadLetter::from_message(&line.message, line.dead_at.clone(), None)
}

#[async_trait]
impl DeadLetters for EmbeddedDeadLetters {
    async fn list(&self, limit: Option<usize>) -> Result<Vec<DeadLetter>, DeadError> {
        Ok(self.read()?.iter().take(limit.unwrap_or(usize::MAX)).map(letter).collect())
    }

    async fn replay(
        &self,
        request: &ReplayRequest,
        progress: &ReplayProgress,
        stop: &CancellationToken,
    ) -> Result<ReplaySummary, DeadError> {
        let selected = |line: &DeadLine| request.selection.takes(&line.message.message_id);
        let total = self.read()?.iter().filter(|l| selected(l)).count() as u64;
        progress.start(total);
        if request.dry_run {
            let left = self.read()?.len() as u64;
            return Ok(ReplaySummary { replayed: total, left, interrupted: false });
        }
        // Taking the queue over: a running relay owns it, and the error says so.
        let queue =
            EmbeddedQueue::open(&self.dir, self.delivery_limit).map_err(|e| DeadError::Store(format!("{e:#}")))?;
        let now = OffsetDateTime::now_utc();
        let mut summary = ReplaySummary::default();
        'chunks: loop {
            // Read again each time: the previous rewrite renumbered the lines.
            let chunk: Vec<DeadLine> = self.read()?.into_iter().filter(|l| selected(l)).take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let mut done = HashSet::new();
            for line in chunk {
                if stop.is_cancelled() {
                    summary.interrupted = true;
                    queue.remove_dead_lines(done).await.map_err(store)?;
                    break 'chunks;
                }
                let to = replay_destination(&line.message);
                let message = replayed(line.message, request.reason.as_deref(), now);
                // Committed (fsync'd) in the worker's queue (a record: the records') before the
                // line may leave the file.
                queue.publish(to, message).await.map_err(store)?;
                done.insert(line.index);
                summary.replayed += 1;
                progress.step(summary.replayed);
            }
            queue.remove_dead_lines(done).await.map_err(store)?;
        }
        summary.left = self.read()?.len() as u64;
        Ok(summary)
    }
}
