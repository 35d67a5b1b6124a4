//! Saving the recording of a voice conversation: streamed to a temporary file, fsync'd, then
//! renamed, so `{conversation_id}.wav` is either whole or absent, and never held in memory.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use tokio::io::AsyncWriteExt;

use super::{projects::Project, Worker};
use crate::{
    config::AudioSettings,
    polyai::{transport_detail, ApiError, AudioRequest},
};

/// Only voice calls have recordings; asking for a chat's would be a guaranteed 404.
const VOICE_CHANNEL: &str = "VOICE-SIP";

#[derive(Deserialize)]
struct Channel {
    #[serde(default)]
    channel: Option<String>,
}

/// A conversation id as a file name: refuse anything that could leave the directory.
fn file_name(conversation_id: &str) -> Option<String> {
    let safe = !conversation_id.is_empty()
        && !conversation_id.starts_with('.')
        && conversation_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    safe.then(|| format!("{conversation_id}.wav"))
}

impl Worker {
    /// The record's `audio` field: where the WAV was saved, why there is none, or `None` for chats.
    /// Errors other than a missing recording are returned, so the event is retried.
    pub(super) async fn save_audio(
        &self,
        settings: &AudioSettings,
        project: &Project,
        conversation_id: &str,
        conversation: &RawValue,
    ) -> Result<Option<Value>, ApiError> {
        let channel = serde_json::from_str::<Channel>(conversation.get()).ok().and_then(|c| c.channel);
        if channel.as_deref() != Some(VOICE_CHANNEL) {
            return Ok(None);
        }
        let Some(name) = file_name(conversation_id) else {
            return Ok(Some(json!({"error": "the conversation id cannot be a file name"})));
        };
        let request = recording_asked(settings);
        // As for a conversation: the project's turn first, then a call slot.
        project.throttle.acquire().await;
        let _slot = self.api_slots.acquire().await.expect("the semaphore is never closed");
        let response = match project.client.audio(conversation_id, request).await {
            Ok(response) => response,
            // Recorded, not retried: a call can have no recording (or none kept).
            Err(ApiError::NotFound { detail }) => {
                return Ok(Some(json!({"error": "no recording", "status": 404, "detail": detail})))
            }
            Err(other) => return Err(other),
        };
        let path = settings.dir.join(&name);
        let bytes = write_atomically(response, &settings.dir, &path, settings.max_bytes).await?;
        Ok(Some(json!({
            "path": path.display().to_string(),
            "bytes": bytes,
            "direction": settings.direction.as_str(),
            "redacted": settings.redacted,
        })))
    }
}

/// The recording asked for, as the audio settings say.
pub(super) fn recording_asked(settings: &AudioSettings) -> AudioRequest {
    AudioRequest { direction: settings.direction, redacted: settings.redacted }
}

/// A recording over `RELAY_AUDIO_MAX`: asking again would bring the same bytes.
fn too_large(limit: u64) -> ApiError {
    ApiError::Unusable { detail: format!("the recording is larger than {limit} bytes (RELAY_AUDIO_MAX)") }
}

/// A name the filesystem refuses (too long, say) is refused every time: not worth a retry.
fn refused_name(error: std::io::Error) -> ApiError {
    use std::io::ErrorKind::{InvalidFilename, InvalidInput};
    match error.kind() {
        InvalidFilename | InvalidInput => {
            ApiError::Unusable { detail: format!("the filesystem refuses the recording's file name: {error}") }
        }
        _ => ApiError::Transport(format!("cannot write the recording: {error}")),
    }
}

/// Streams the body, up to `limit` bytes, to an owner-only temporary file in `dir`, syncs it,
/// and renames it to `path`.
async fn write_atomically(
    mut response: reqwest::Response,
    dir: &Path,
    path: &Path,
    limit: u64,
) -> Result<u64, ApiError> {
    let io = |e: std::io::Error| ApiError::Transport(format!("cannot write the recording: {e}"));
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let owned_dir = dir.to_owned();
    tokio::task::spawn_blocking(move || crate::owner_only::create_dir(&owned_dir))
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
    let temporary: PathBuf = dir.join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut file =
            crate::owner_only::tokio_open_options().create_new(true).write(true).open(&temporary).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| ApiError::Transport(transport_detail(&e)))? {
            written += chunk.len() as u64;
            if written > limit {
                return Err(too_large(limit));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&temporary, path).await.map_err(refused_name)?;
        // The rename itself is durable only once the directory is synced.
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temporary).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_become_file_names() {
        assert_eq!(file_name("CA7f3e").as_deref(), Some("CA7f3e.wav"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "CA 1"] {
            assert_eq!(file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_name_the_filesystem_refuses_is_not_retried() {
        let dir = std::env::temp_dir();
        let long = dir.join(format!("{}.wav", "a".repeat(300)));
        let error = std::fs::write(&long, b"").unwrap_err();
        assert!(matches!(refused_name(error), ApiError::Unusable { .. }));
        let missing = std::fs::write(dir.join("no-such-dir/x.wav"), b"").unwrap_err();
        assert!(matches!(refused_name(missing), ApiError::Transport(_)));
    }
}
