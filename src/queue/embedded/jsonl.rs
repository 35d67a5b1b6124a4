//! Append-only JSON Lines files, fsync'd after every line: `conversations.jsonl`, `dead.jsonl`.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    path::Path,
    sync::Mutex,
};

pub struct JsonLines {
    file: Mutex<File>,
}

impl JsonLines {
    pub fn open(path: &Path) -> std::io::Result<Self> {
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
        Ok(Self { file: Mutex::new(file) })
    }

    /// Appends `line` (which must hold no newline) and syncs it to disk before returning.
    pub fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut buffer = Vec::with_capacity(line.len() + 1);
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        // One write of the whole line, so a crash cannot interleave half a line with another.
        file.write_all(&buffer)?;
        file.sync_data()
    }
}
