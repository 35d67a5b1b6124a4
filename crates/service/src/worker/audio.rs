//! Saving the recording of a voice conversation: streamed to a temporary file, fsync'd, then
//! renamed, so `{conversation_id}.wav` is either whole or absent, and never held in memory.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use tokio::io::AsyncWriteExt;

use super::{
    outage::CallKind,
    process::{Failed, Stopped, WAIT_IN_MEMORY},
    projects::Project,
    throttle::Turn,
    Worker,
};
use crate::{
    config::AudioSettings,
    polyai::{transport_detail, ApiError, AudioRequest, KeyedCall},
    telemetry::names,
    wall_clock::unix_millis,
};

/// Only voice calls have recordings; asking for a chat's would be a guaranteed 404.
const VOICE_CHANNEL: &str = "VOICE-SIP";

/// The record's word on a recording not asked for because the call had not ended.
const IN_PROGRESS: &str =
    "the call had not ended when its conversation was fetched; the event of its end saves the recording";

/// A temporary file untouched this long belongs to no download: one in progress writes each
/// chunk as it comes, and a read that waits longer than `RELAY_API_TIMEOUT` fails it.
const STALE_PART: Duration = Duration::from_secs(3600);

/// What the conversation says of its call that decides whether to ask for its recording.
#[derive(Deserialize)]
struct Call {
    #[serde(default)]
    channel: Option<String>,
    /// Any JSON, so that an odd value here cannot hide the channel: only `true` says the call
    /// is going. Two fields, not an alias, so that an answer with both spellings still parses.
    #[serde(default)]
    in_progress: Option<Value>,
    /// The Agents API's spelling.
    #[serde(default, rename = "inProgress")]
    in_progress_agents: Option<Value>,
}

impl Call {
    fn in_progress(&self) -> bool {
        let going = Some(Value::Bool(true));
        self.in_progress == going || self.in_progress_agents == going
    }
}

/// A conversation id as a file name: refuse anything that could leave the directory.
fn file_name(conversation_id: &str) -> Option<String> {
    let safe = !conversation_id.is_empty()
        && !conversation_id.starts_with('.')
        && conversation_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    safe.then(|| format!("{conversation_id}.wav"))
}

/// Whether a conversation's recording is asked for.
pub(super) enum Asking {
    /// Asked for: a voice call that has ended, or whose event says it has.
    Ask,
    /// Not asked for; the record's `audio` field instead (`None` for chats).
    Skip(Option<Value>),
}

impl Asking {
    /// What the fetched conversation says; `call_ended`: the event says the call has ended.
    pub(super) fn for_conversation(conversation: &RawValue, call_ended: bool) -> Self {
        let Some(call) = serde_json::from_str::<Call>(conversation.get()).ok() else { return Self::Skip(None) };
        if call.channel.as_deref() != Some(VOICE_CHANNEL) {
            return Self::Skip(None);
        }
        // A call still going (a handoff's event comes during the call) has no whole recording
        // yet: asking would spend an API call on a 404, or save a partial WAV. The event of the
        // call's end saves it; that event asks whatever the conversation says, since the API's
        // answer may lag behind the call's end, and its recording may be there already.
        if !call_ended && call.in_progress() {
            return Self::Skip(Some(json!({"error": "call in progress", "detail": IN_PROGRESS})));
        }
        Self::Ask
    }
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
        call_ended: bool,
        turn: Turn,
    ) -> Result<Option<Value>, Stopped> {
        match Asking::for_conversation(conversation, call_ended) {
            Asking::Skip(audio) => Ok(audio),
            Asking::Ask => self.save_recording(settings, project, conversation_id, turn).await,
        }
    }

    /// Downloads and saves the recording of a conversation (one [`Asking::Ask`]s for).
    pub(super) async fn save_recording(
        &self,
        settings: &AudioSettings,
        project: &Project,
        conversation_id: &str,
        turn: Turn,
    ) -> Result<Option<Value>, Stopped> {
        let Some(name) = file_name(conversation_id) else {
            return Ok(Some(json!({"error": "the conversation id cannot be a file name"})));
        };
        // As for a conversation: the project's turn first, then a call slot.
        project.throttle.take(turn, WAIT_IN_MEMORY).await.map_err(Stopped::TurnPassed)?;
        let request = recording_asked(settings);
        let saved = self.download(settings, project, conversation_id, &name).await;
        Ok(saved.map_err(|error| Failed {
            error,
            call: KeyedCall::Recording { conversation_id: conversation_id.to_owned(), request },
        })?)
    }

    async fn download(
        &self,
        settings: &AudioSettings,
        project: &Project,
        conversation_id: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let request = recording_asked(settings);
        let _slot = self.api_slots.acquire().await.expect("the semaphore is never closed");
        let asked = project.client.audio(conversation_id, request).await;
        let response = match asked {
            Ok(response) => response,
            Err(error) => {
                project.answered.note_error(CallKind::Recording, &error, unix_millis());
                self.count_recording(project, result_of(&error));
                return match error {
                    // Recorded, not retried: a call can have no recording (or none kept).
                    ApiError::NotFound { detail } => {
                        Ok(Some(json!({"error": "no recording", "status": 404, "detail": detail})))
                    }
                    other => Err(other),
                };
            }
        };
        let path = settings.dir.join(name);
        // Once written through: a recording that stalls is no answer. One the disk refuses is:
        // the API was at work, and the failure is the relay's own, counted as an attempt.
        let bytes = match write_atomically(response, &settings.dir, &path, settings.max_bytes).await {
            Ok(bytes) => {
                project.answered.answer(CallKind::Recording, unix_millis());
                self.count_recording(project, "saved");
                bytes
            }
            Err(Saving::Body(error)) => {
                project.answered.note_error(CallKind::Recording, &error, unix_millis());
                self.count_recording(project, result_of(&error));
                return Err(error);
            }
            Err(Saving::Disk(error)) => {
                project.answered.answer(CallKind::Recording, unix_millis());
                self.count_recording(project, "disk_failed");
                return Err(error);
            }
        };
        Ok(Some(json!({
            "path": path.display().to_string(),
            "bytes": bytes,
            "direction": settings.direction.as_str(),
            "redacted": settings.redacted,
        })))
    }
}

impl Worker {
    /// `relay_recordings_total`.
    fn count_recording(&self, project: &Project, result: &'static str) {
        let label = project.label();
        self.metrics
            .record(|| metrics::counter!(names::RECORDINGS, "project" => label, "result" => result).increment(1));
    }
}

/// The `result` of a recording the API did not give, for `relay_recordings_total`.
fn result_of(error: &ApiError) -> &'static str {
    match error {
        ApiError::NotFound { .. } => "none",
        ApiError::Server { .. } | ApiError::Transport(_) => "unanswered",
        ApiError::Unauthorized { .. } => "refused",
        ApiError::RateLimited { .. } => "rate_limited",
        ApiError::Unusable { .. } => "unusable",
        ApiError::Rejected { .. } => "rejected",
    }
}

/// The recording asked for, as the audio settings say.
fn recording_asked(settings: &AudioSettings) -> AudioRequest {
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

/// Why a recording was not saved: its body (cut short, too large), or the disk.
#[derive(Debug)]
enum Saving {
    Body(ApiError),
    Disk(ApiError),
}

/// Streams the body, up to `limit` bytes, to an owner-only temporary file in `dir`, syncs it,
/// and renames it to `path`.
async fn write_atomically(mut response: reqwest::Response, dir: &Path, path: &Path, limit: u64) -> Result<u64, Saving> {
    let io = |e: std::io::Error| Saving::Disk(ApiError::Transport(format!("cannot write the recording: {e}")));
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(Saving::Body(too_large(limit)));
    }
    let owned_dir = dir.to_owned();
    tokio::task::spawn_blocking(move || crate::owner_only::create_dir(&owned_dir))
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
    let mut temporary = PartFile { path: dir.join(format!(".{}.part", uuid::Uuid::new_v4().simple())), kept: false };
    let result = async {
        let mut file = crate::owner_only::tokio_open_options()
            .create_new(true)
            .write(true)
            .open(&temporary.path)
            .await
            .map_err(io)?;
        let mut written = 0u64;
        let body = |e: reqwest::Error| Saving::Body(ApiError::Transport(transport_detail(&e)));
        while let Some(chunk) = response.chunk().await.map_err(body)? {
            written += chunk.len() as u64;
            if written > limit {
                return Err(Saving::Body(too_large(limit)));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&temporary.path, path).await.map_err(|e| Saving::Disk(refused_name(e)))?;
        temporary.kept = true;
        // The rename itself is durable only once the directory is synced.
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
        Ok(written)
    }
    .await;
    result
}

/// A recording's temporary file, removed when dropped unless it became the recording: a download
/// that fails, or whose task is aborted (shutdown, a pause), leaves nothing behind.
struct PartFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A name [`write_atomically`] gives its temporary files (`.{uuid}.part`), and nothing else: the
/// directory may hold other tools' files.
fn is_part_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|name| name.strip_suffix(".part"))
        .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Makes `dir` ready for recordings at start-up: created owner-only, and written to once. A
/// directory the relay cannot use stops start-up with a line naming the setting; found only when
/// the first recording arrived, every voice call's event would be retried and dead-lettered while
/// `/readyz` said all was well.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let shown = dir.display();
    crate::owner_only::create_dir(dir).with_context(|| format!("RELAY_AUDIO_DIR: cannot create {shown} owner-only"))?;
    // Named like a download's temporary file, so one left by a kill is removed like theirs.
    let probe = dir.join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
    crate::owner_only::open_options()
        .create_new(true)
        .write(true)
        .open(&probe)
        .with_context(|| format!("RELAY_AUDIO_DIR: cannot write recordings in {shown}"))?;
    std::fs::remove_file(&probe).with_context(|| format!("RELAY_AUDIO_DIR: cannot remove files in {shown}"))
}

/// Removes the temporary files a killed process left in `dir` (each up to a long call's WAV),
/// leaving those still being written: several workers may share the directory.
pub(super) fn remove_stale_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !is_part_name(&name) {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified());
        if modified.is_ok_and(|at| now.duration_since(at).unwrap_or_default() >= STALE_PART) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %name, "removed a recording's temporary file left by a stopped process")
                }
                Err(error) => tracing::warn!(file = %name, %error, "cannot remove a recording's temporary file"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir::TempDir;

    #[test]
    fn only_plain_ids_become_file_names() {
        assert_eq!(file_name("CA7f3e").as_deref(), Some("CA7f3e.wav"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "CA 1"] {
            assert_eq!(file_name(bad), None, "{bad}");
        }
    }

    /// A directory of the test's own, created.
    fn temp_dir() -> TempDir {
        let dir = TempDir::new("relay-audio");
        std::fs::create_dir_all(&dir.0).unwrap();
        dir
    }

    /// What `dir` holds, sorted.
    fn names(dir: &TempDir) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    // The worker aborts the tasks still running a while into a shutdown or a pause of every
    // project: a recording half downloaded then must not stay on disk.
    #[tokio::test]
    async fn an_aborted_download_leaves_no_temporary_file() {
        // A recording that starts to come, then stalls.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/recording", server.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.unwrap();
            let mut request = [0; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ncontent-length: 100000\r\n\r\nRIFF";
            stream.write_all(head.as_bytes()).await.unwrap();
            std::future::pending::<()>().await;
        });
        let response = crate::http_client::builder().build().unwrap().get(&url).send().await.unwrap();
        let dir = temp_dir();
        let path = dir.0.join("CA1.wav");
        let download = tokio::spawn({
            let (dir, path) = (dir.0.clone(), path.clone());
            async move { write_atomically(response, &dir, &path, 1 << 20).await }
        });
        let started = tokio::time::timeout(Duration::from_secs(10), async {
            while !names(&dir).iter().any(|name| name.ends_with(".part")) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(started.is_ok(), "the download never started");
        download.abort();
        assert!(download.await.unwrap_err().is_cancelled());
        assert_eq!(names(&dir), Vec::<String>::new(), "nothing left");
    }

    #[test]
    fn temporary_files_a_stopped_process_left_are_removed_and_the_others_kept() {
        let dir = temp_dir();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        let left = format!(".{}.part", uuid::Uuid::new_v4().simple());
        let writing = format!(".{}.part", uuid::Uuid::new_v4().simple());
        for (name, modified) in [
            (left.as_str(), two_hours_ago),
            (writing.as_str(), SystemTime::now()),
            ("CA1.wav", two_hours_ago),
            (".another-tool.part", two_hours_ago),
        ] {
            let file = std::fs::File::create(dir.0.join(name)).unwrap();
            file.set_modified(modified).unwrap();
        }
        remove_stale_parts(&dir.0);
        let mut kept = vec![writing, ".another-tool.part".to_owned(), "CA1.wav".to_owned()];
        kept.sort();
        assert_eq!(names(&dir), kept);
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
