use std::{io::Write, process::ExitCode};

mod cli;

use clap::Parser;
use cli::Cli;
use polyai_relay::telemetry;

// mimalloc: glibc's malloc/free were a fifth of the relay's instructions per webhook (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (format, default_level) = cli.log_defaults();
    let traces = telemetry::init(format, default_level, cli.exports_traces());
    let result = cli.execute().await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, for humans and log collectors alike; `{:#}` keeps the context chain.
            tracing::error!("{error:#}");
            // Not `eprintln!`: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "polyai-relay: {error:#}");
            // Exit here rather than by returning: returning drops the runtime, which cancels its
            // tasks, and lapin's I/O thread, if it is still reaching the broker through one of
            // them (start-up failed meanwhile), panics on the cancelled task after this line.
            // `exit` still flushes stdout; what a failed command started has nothing to finish.
            std::process::exit(1)
        }
    }
}
