//! Append-only JSON Lines files, fsync'd after every line: `conversations.jsonl`, `dead.jsonl`.

use std::{borrow::Cow, fs::File, io::Write, path::Path, sync::Mutex};

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

    /// Appends `line`, one JSON value, on a line of its own (see [`one_line`]), and syncs it to
    /// disk before returning; a failed append leaves no part of it (see [`Appender::append`]).
    pub fn append(&self, line: &[u8]) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).append(&one_line(line))?;
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

/// `json` on one line. A record carries the webhook's body and the API's answer as they came, and
/// either may be pretty-printed: its line breaks would split the record over several lines, each
/// unreadable. In JSON a line break can only be whitespace between tokens (a string holds it
/// escaped), so each becomes a space: the same JSON, every other byte as it was.
fn one_line(json: &[u8]) -> Cow<'_, [u8]> {
    if !json.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return Cow::Borrowed(json);
    }
    Cow::Owned(json.iter().map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pretty_printed_value_is_written_on_one_line_and_reads_back_the_same() {
        let pretty = b"{\r\n  \"event\": {\n    \"note\": \"two\\nlines\"\n  },\n  \"n\": 1.50\n}";
        let line = one_line(pretty);
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
        let (before, after): (serde_json::Value, serde_json::Value) =
            (serde_json::from_slice(pretty).unwrap(), serde_json::from_slice(&line).unwrap());
        assert_eq!(before, after);
        assert!(String::from_utf8_lossy(&line).contains(r#""n": 1.50"#), "other bytes kept");
        assert!(matches!(one_line(b"{\"a\":1}"), Cow::Borrowed(_)), "a compact value is not copied");
    }
}
