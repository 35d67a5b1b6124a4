//! Append-only JSON Lines files, fsync'd after every line: `conversations.jsonl`, `dead.jsonl`.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    path::Path,
    sync::Mutex,
};

use tokio::sync::watch;

pub struct JsonLines {
    file: Mutex<File>,
    /// Kept to rewrite the file in place of the old one (dead letters leaving on a replay).
    path: std::path::PathBuf,
    /// Counts the writes to the queue's files (shared by its records and its dead letters), sent
    /// once each is on disk: a reader in the process (the demo's printer) reads the files when
    /// they changed rather than on a timer.
    written: watch::Sender<u64>,
}

impl JsonLines {
    pub fn open(path: &Path, written: watch::Sender<u64>) -> std::io::Result<Self> {
        let mut file = crate::owner_only::open_options().create(true).read(true).append(true).open(path)?;
        crate::owner_only::restrict_if_present(path)?;
        // A crash mid-write can leave a last line without its newline; end it, so the next
        // record starts on a line of its own and only the torn one is unreadable.
        let length = file.metadata()?.len();
        if length > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(length - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(Self { file: Mutex::new(file), path: path.to_owned(), written })
    }

    /// Appends `line` (which must hold no newline) and syncs it to disk before returning.
    pub fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut buffer = Vec::with_capacity(line.len() + 1);
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        // One write of the whole line, so a crash cannot interleave half a line with another.
        file.write_all(&buffer)?;
        file.sync_data()?;
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
        *file = crate::owner_only::open_options().read(true).append(true).open(&self.path)?;
        self.written.send_modify(|writes| *writes += 1);
        Ok(())
    }
}
