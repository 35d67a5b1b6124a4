//! Progress of a backfill: a bar on a terminal, plain lines otherwise (logs, CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub enum Progress {
    Bar(ProgressBar),
    Lines,
}

impl Progress {
    /// A bar when stderr is a terminal, lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Self::Bar(bar)
        } else {
            Self::Lines
        }
    }

    pub fn page(&self, pages: u64, seen: u64, published: u64) {
        let message = format!("page {pages}: {seen} conversations seen, {published} published");
        match self {
            Self::Bar(bar) => bar.set_message(message),
            Self::Lines => eprintln!("{message}"),
        }
    }

    pub fn note(&self, message: &str) {
        match self {
            Self::Bar(bar) => bar.println(message),
            Self::Lines => eprintln!("{message}"),
        }
    }

    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
