//! A command's report on stdout. A reader that stops early (`polyai-relay dead list | head`) is
//! not a failure: the rest of the report goes nowhere and the command finishes its work, where
//! `println!` would panic half-way through it (Rust ignores SIGPIPE, so the write fails instead).

use std::io::{ErrorKind, Write};

/// Writes one line of the report; dropped once the reader is gone.
pub fn line(text: std::fmt::Arguments<'_>) {
    match writeln!(std::io::stdout().lock(), "{text}") {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::BrokenPipe => {}
        // As `println!` does: a report that cannot be written anywhere is not worth a result.
        Err(error) => panic!("failed printing to stdout: {error}"),
    }
}
