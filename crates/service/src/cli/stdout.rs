//! A command's report on stdout. A reader that stops early (`polyai-relay dead list | head`) is
//! not a failure: the rest of the report goes nowhere and the command finishes its work, where
//! `println!` would panic half-way through it (Rust ignores SIGPIPE, so the write fails instead).

use std::io::{ErrorKind, Write};

/// Writes one line of the report; dropped once the reader is gone.
pub fn line(text: std::fmt::Arguments<'_>) {
    if let Err(error) = essential_line(text) {
        if error.kind() != ErrorKind::BrokenPipe {
            // As `println!` does: a report that cannot be written anywhere is not worth a result.
            panic!("failed printing to stdout: {error}");
        }
    }
}

/// Writes a line that is the command's result and exists nowhere else (a new signing secret):
/// its loss, a broken pipe included, is the caller's error to report.
pub fn essential_line(text: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}
