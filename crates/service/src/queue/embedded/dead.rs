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

fn parse(index: usize, bytes: &[u8]) -> Option<DeadLine> {
    let line: Line = serde_json::from_slice(bytes).ok()?;
    let body = match (line.event, line.event_text) {
        (Some(event), _) => Bytes::from(event.get().to_owned()),
        (None, Some(text)) => Bytes::from(text),
        (None, None) => Bytes::new(),
    };
    let message =
        Message { body, message_id: line.event_id, event_type: line.event_type, timestamp: 0, headers: line.headers };
    Some(DeadLine { index, message, dead_at: line.dead_at })
}

/// The lines of `dead.jsonl`, each with its newline (the last may have none). Split as bytes: a
/// line torn inside a character (a crash, a full disk) is not UTF-8, and must not make the
/// others unreadable.
fn split(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split_inclusive(|byte| *byte == b'\n')
}

/// The dead letters in `bytes`, oldest first; a torn or unreadable line is skipped (and kept),
/// and counted in a warning.
fn lines(bytes: &[u8]) -> Vec<DeadLine> {
    let mut letters = Vec::new();
    let mut unreadable = 0;
    for (index, line) in split(bytes).enumerate() {
        let line = line.trim_ascii_end();
        match parse(index, line) {
            Some(letter) => letters.push(letter),
            None if line.is_empty() => {}
            None => unreadable += 1,
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            "{DEAD_FILE}: lines that are not dead letters (torn by a crash or a full disk) are skipped and left in the file"
        );
    }
    letters
}

impl EmbeddedQueue {
    /// The dead letters of the queue in `dir`, without taking it over (it may belong to a
    /// running relay): reading a file moves nothing.
    pub fn dead_letters_in(dir: &Path) -> std::io::Result<Vec<DeadLine>> {
        match std::fs::read(dir.join(DEAD_FILE)) {
            Ok(bytes) => Ok(lines(&bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// Drops the lines numbered in `gone` from `dead.jsonl`. Only the owner of the queue may:
    /// no one else appends meanwhile, so line numbers read before stay true.
    pub async fn remove_dead_lines(&self, gone: std::collections::HashSet<usize>) -> Result<(), PublishError> {
        self.blocking(move |shared| {
            let bytes = std::fs::read(shared.dir.join(DEAD_FILE))?;
            // Split as `dead_letters_in` splits, so its line numbers pick the same lines.
            let kept = split(&bytes)
                .enumerate()
                .filter(|(index, _)| !gone.contains(index))
                .map(|(_, line)| line.strip_suffix(b"\n").unwrap_or(line))
                .filter(|line| !line.is_empty());
            shared.dead.rewrite(kept)
        })
        .await
    }
}
