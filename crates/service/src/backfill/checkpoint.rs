//! Where an interrupted backfill stands: written atomically after every page, so a re-run with
//! the same arguments resumes at the next page instead of starting over.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What makes two runs "the same backfill": the arguments as given, and the project. Bounds
/// given as durations resolve to a later window on a later run: see [`super::Window`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillKey {
    pub since: String,
    pub until: Option<String>,
    pub client_env: String,
    pub account_id: String,
    pub project_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub key: BackfillKey,
    /// The absolute window this checkpoint pages, fixed when it began: its cursor belongs to that
    /// query, so "24h" must not slide under it. A re-run whose window ends later lists the rest
    /// as a window of its own once this one is done.
    pub start_time: String,
    pub end_time: String,
    /// Where the next page starts.
    pub cursor: Option<String>,
    pub offset: Option<u64>,
    pub pages: u64,
    pub published: u64,
    pub skipped_in_progress: u64,
    /// The run got to the end. Kept only by a run over several projects, so that running it
    /// again after another project failed does not redo this one (it lists only what the window
    /// gained since); absent in older files.
    #[serde(default)]
    pub finished: bool,
}

pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> anyhow::Result<Option<Checkpoint>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("the checkpoint {} is unreadable ({e}); delete it to start over", self.path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read the checkpoint {}: {e}", self.path.display())),
        }
    }

    /// Writes to a temporary file, syncs it and renames it over the old one.
    pub fn save(&self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temporary = self.path.with_extension("tmp");
        let file = std::fs::File::create(&temporary)?;
        serde_json::to_writer_pretty(&file, checkpoint)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        Ok(())
    }

    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
