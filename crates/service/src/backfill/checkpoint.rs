//! Where an interrupted backfill stands: written atomically after every page, so a re-run with
//! the same arguments resumes at the next page instead of starting over.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::owner_only;

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

    /// Writes to a temporary file, syncs it and renames it over the old one. Owner-only, as call
    /// data: it names the account, the project and where in their calls the run stands.
    pub fn save(&self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Only the directories it makes: `--checkpoint` can name a file in a shared one.
        owner_only::create_missing_dirs(dir)?;
        let temporary = self.path.with_extension("tmp");
        let file = owner_only::open_options().write(true).create(true).truncate(true).open(&temporary)?;
        // One left by a run killed mid-write keeps its mode through the open.
        owner_only::restrict_if_present(&temporary)?;
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::temp_dir::TempDir;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            key: BackfillKey {
                since: "24h".into(),
                until: None,
                client_env: "live".into(),
                account_id: "acct".into(),
                project_id: "proj".into(),
            },
            start_time: "2026-11-30T00:00:00Z".into(),
            end_time: "2026-12-01T00:00:00Z".into(),
            cursor: Some("next".into()),
            offset: None,
            pages: 1,
            published: 100,
            skipped_in_progress: 0,
            finished: false,
        }
    }

    #[test]
    fn the_checkpoint_and_the_directories_it_makes_are_owner_only() {
        let dir = TempDir::new("relay-checkpoint");
        let shared = dir.0.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = CheckpointFile::new(shared.join("data/backfill-checkpoint.json"));
        // A temporary file a killed run left, as any process would make it.
        std::fs::create_dir(shared.join("data")).unwrap();
        std::fs::set_permissions(shared.join("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(file.path().with_extension("tmp"), "{").unwrap();
        std::fs::set_permissions(file.path().with_extension("tmp"), std::fs::Permissions::from_mode(0o644)).unwrap();

        file.save(&checkpoint()).unwrap();
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(file.load().unwrap().unwrap().cursor.as_deref(), Some("next"));
        assert_eq!(mode(&shared), 0o755, "a directory it did not make is left as it was");

        let fresh = CheckpointFile::new(shared.join("new/deeper/backfill-checkpoint.json"));
        fresh.save(&checkpoint()).unwrap();
        assert_eq!(mode(fresh.path()), 0o600);
        assert_eq!(mode(&shared.join("new")), 0o700);
        assert_eq!(mode(&shared.join("new/deeper")), 0o700);
    }
}
