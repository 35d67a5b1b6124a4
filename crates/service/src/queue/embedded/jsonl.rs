//! Append-only JSON Lines files, fsync'd after every line: `conversations.jsonl`, `dead.jsonl`.

use std::{fs::File, io::Write, path::Path, sync::Mutex};

use tokio::sync::watch;

use super::line_file::Appender;

pub struct JsonLines {
    file: Mutex<Appender<File>>,
    /// Kept to rewrite the file in place of the old one (dead letters leaving on a replay).
    path: std::path::PathBuf,
    /// Counts the writes to the queue's files (shared by its records and its dead letters), sent
    /// once each is on disk: a reader in the process (the demo's printer) reads the files when
    /// they changed rather than on a timer.
    written: watch::Sender<u64>,
}

impl JsonLines {
    pub fn open(path: &Path, written: watch::Sender<u64>) -> std::io::Result<Self> {
        let file = crate::owner_only::open_options().create(true).read(true).append(true).open(path)?;
        crate::owner_only::restrict_if_present(path)?;
        let file = Appender::new(file)?;
        Ok(Self { file: Mutex::new(file), path: path.to_owned(), written })
    }

    /// Appends `line` (which must hold no newline) and syncs it to disk before returning; a
    /// failed append leaves no part of it (see [`Appender::append`]).
    pub fn append(&self, line: &[u8]) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).append(line)?;
        self.written.send_modify(|writes| *writes += 1);
        Ok(())
    }

    /// Replaces the file by `lines` (each without its newline): written to a temporary file (owner-only,
    /// like the old one), synced, renamed over it, and the directory synced, so a crash
    /// leaves either the old file or the new one. Appends wait meanwhile, and go to the new file.
    pub fn rewrite<'a>(&self, lines: impl Iterator<Item = &'a [u8]>) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let temporary = self.path.with_extension("rewrite");
        let mut new = crate::owner_only::open_options().create(true).write(true).truncate(true).open(&temporary)?;
        let mut buffer = Vec::new();
        for line in lines {
            buffer.extend_from_slice(line);
            buffer.push(b'\n');
        }
        new.write_all(&buffer)?;
        new.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        *file = Appender::new(crate::owner_only::open_options().read(true).append(true).open(&self.path)?)?;
        self.written.send_modify(|writes| *writes += 1);
        Ok(())
    }
}
