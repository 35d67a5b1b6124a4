//! Progress of a replay: a bar on a terminal, nothing otherwise (the summary line says it all).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub enum ReplayProgress {
    Bar(ProgressBar),
    Hidden,
}

impl ReplayProgress {
    /// A bar when stderr is a terminal.
    pub fn for_stderr() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Hidden;
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} dead letters {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Self::Bar(bar)
    }

    /// How many dead letters the run will go through.
    pub fn start(&self, total: u64) {
        if let Self::Bar(bar) = self {
            bar.set_length(total);
        }
    }

    /// One more gone through; `selected` so far, to be sent back. Not "replayed": a record that
    /// no queue takes is found out only once sent, and stays (the summary line counts it right).
    pub fn step(&self, selected: u64) {
        if let Self::Bar(bar) = self {
            bar.inc(1);
            bar.set_message(format!("({selected} selected)"));
        }
    }

    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
