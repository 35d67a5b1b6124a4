//! The embedded queue's dead letters (`dead.jsonl`): read without taking the queue over, and
//! removed by rewriting the file once their replay is committed.

use std::{collections::BTreeMap, path::Path};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{EmbeddedQueue, DEAD_FILE};
use crate::queue::{Message, PublishError};

/// One line of `dead.jsonl`.
#[derive(Debug, Clone)]
pub struct DeadLine {
    /// Line number in the file (from 0): what a rewrite keeps or drops.
    pub index: usize,
    /// The event as the worker had it, headers included.
    pub message: Message,
    pub dead_at: Option<String>,
}

#[derive(Deserialize)]
struct Line {
    event_id: String,
    event_type: String,
    #[serde(default)]
    dead_at: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    event: Option<Box<RawValue>>,
    #[serde(default)]
    event_text: Option<String>,
}

fn parse(index: usize, text: &str) -> Option<DeadLine> {
    let line: Line = serde_json::from_str(text).ok()?;
    let body = match (line.event, line.event_text) {
        (Some(event), _) => Bytes::from(event.get().to_owned()),
        (None, Some(text)) => Bytes::from(text),
        (None, None) => Bytes::new(),
    };
    let message =
        Message { body, message_id: line.event_id, event_type: line.event_type, timestamp: 0, headers: line.headers };
    Some(DeadLine { index, message, dead_at: line.dead_at })
}

/// The dead letters in `text`, oldest first; a torn or unreadable line is skipped (and kept).
fn lines(text: &str) -> Vec<DeadLine> {
    text.split_inclusive('\n').enumerate().filter_map(|(index, line)| parse(index, line.trim_end())).collect()
}

impl EmbeddedQueue {
    /// The dead letters of the queue in `dir`, without taking it over (it may belong to a
    /// running relay): reading a file moves nothing.
    pub fn dead_letters_in(dir: &Path) -> std::io::Result<Vec<DeadLine>> {
        match std::fs::read_to_string(dir.join(DEAD_FILE)) {
            Ok(text) => Ok(lines(&text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// Drops the lines numbered in `gone` from `dead.jsonl`. Only the owner of the queue may:
    /// no one else appends meanwhile, so line numbers read before stay true.
    pub async fn remove_dead_lines(&self, gone: std::collections::HashSet<usize>) -> Result<(), PublishError> {
        self.blocking(move |shared| {
            let text = std::fs::read_to_string(shared.dir.join(DEAD_FILE))?;
            let kept = text
                .split_inclusive('\n')
                .enumerate()
                .filter(|(index, _)| !gone.contains(index))
                .map(|(_, line)| line.trim_end_matches('\n').as_bytes())
                .filter(|line| !line.is_empty());
            shared.dead.rewrite(kept)
        })
        .await
    }
}
