//! Appending a line to a file whole or not at all. A write cut short (a full disk, a quota, an
//! I/O error) would leave part of the line behind, and the caller's retry would glue the whole
//! line to it: one unreadable line, and the record or dead letter in it lost. So a failed append
//! cuts the file back to where it was, and if even that fails, the next append first ends the
//! torn line.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
};

/// What an append needs of its file besides writing: a seam, so tests can make a real file's
/// write fail partway (as a full disk does) without filling a disk.
pub(super) trait LineFile: Read + Write + Seek {
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
}

impl LineFile for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// Appends lines to a file opened for appending (every write lands at its end).
pub(super) struct Appender<F> {
    file: F,
    /// The file may end in part of a line: a failed append could not cut it off.
    torn: bool,
}

impl<F: LineFile> Appender<F> {
    /// Takes `file` over, ending a last line a crash left without its newline.
    pub fn new(mut file: F) -> io::Result<Self> {
        end_torn_line(&mut file)?;
        Ok(Self { file, torn: false })
    }

    /// Appends `line` (which must hold no newline) and syncs it to disk before returning. On an
    /// error the file is as it was before, or, if it could not be cut back, the next append
    /// starts on a line of its own.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if self.torn {
            end_torn_line(&mut self.file)?;
            self.torn = false;
        }
        let before = self.file.len()?;
        let mut buffer = Vec::with_capacity(line.len() + 1);
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        // One write of the whole line, so a crash cannot interleave half a line with another.
        let written = self.file.write_all(&buffer).and_then(|()| self.file.sync_data());
        if written.is_err() {
            // The caller retries: what this attempt wrote must not stay for the next to follow.
            let cut = self.file.set_len(before).and_then(|()| self.file.sync_data());
            self.torn = cut.is_err();
        }
        written
    }
}

/// Ends a last line that has no newline, so the next line starts on a line of its own and only
/// the torn one is unreadable.
fn end_torn_line(file: &mut impl LineFile) -> io::Result<()> {
    let length = file.len()?;
    if length == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(length - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A real file on a disk with `room` bytes left: a write past it fails partway, as with
    /// ENOSPC. With `cut_fails`, cutting the file back fails too.
    struct FullDisk {
        file: File,
        room: usize,
        cut_fails: bool,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::StorageFull.into());
            }
            let written = self.file.write(&buf[..buf.len().min(self.room)])?;
            self.room -= written;
            Ok(written)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.file.flush()
        }
    }

    impl Read for FullDisk {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.file.read(buf)
        }
    }

    impl Seek for FullDisk {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.file.seek(pos)
        }
    }

    impl LineFile for FullDisk {
        fn len(&self) -> io::Result<u64> {
            LineFile::len(&self.file)
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            if self.cut_fails {
                return Err(io::Error::other("cannot cut the file"));
            }
            LineFile::set_len(&self.file, len)
        }

        fn sync_data(&self) -> io::Result<()> {
            LineFile::sync_data(&self.file)
        }
    }

    struct Path(PathBuf);

    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn full_disk(text: &str, room: usize, cut_fails: bool) -> (Path, Appender<FullDisk>) {
        let path = Path(std::env::temp_dir().join(format!("relay-lines-{}", uuid::Uuid::new_v4().simple())));
        std::fs::write(&path.0, text).unwrap();
        let file = std::fs::OpenOptions::new().read(true).append(true).open(&path.0).unwrap();
        (path, Appender::new(FullDisk { file, room, cut_fails }).unwrap())
    }

    /// A record whose cut would fall inside a multi-byte character, as well as inside the line.
    const RECORD: &[u8] = "{\"caller\":\"Zoë\",\"n\":1}".as_bytes();

    #[test]
    fn an_append_cut_short_by_a_full_disk_leaves_nothing_and_the_retry_lands_whole() {
        let (path, mut lines) = full_disk("{\"first\":1}\n", 14, false);
        for _ in 0..3 {
            assert_eq!(lines.append(RECORD).unwrap_err().kind(), io::ErrorKind::StorageFull);
            assert_eq!(std::fs::read(&path.0).unwrap(), b"{\"first\":1}\n", "as it was before the append");
        }
        lines.file.room = usize::MAX;
        lines.append(RECORD).unwrap();
        let text = std::fs::read_to_string(&path.0).unwrap();
        assert_eq!(text, format!("{{\"first\":1}}\n{}\n", std::str::from_utf8(RECORD).unwrap()));
    }

    #[test]
    fn a_fragment_that_cannot_be_cut_off_is_ended_before_the_next_line() {
        let (path, mut lines) = full_disk("{\"first\":1}\n", 14, true);
        assert!(lines.append(RECORD).is_err());
        lines.file.room = usize::MAX;
        lines.file.cut_fails = false;
        lines.append(b"{\"next\":2}").unwrap();
        let bytes = std::fs::read(&path.0).unwrap();
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 4, "first, the fragment, next, and the empty end: {bytes:?}");
        assert_eq!(lines[0], b"{\"first\":1}");
        assert_eq!(lines[1], &RECORD[..14], "only the fragment is unreadable");
        assert_eq!(lines[2], b"{\"next\":2}");
    }
}
