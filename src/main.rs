use std::{io::Write, process::ExitCode};

use clap::Parser;
use polyai_relay::{cli::Cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (format, default_level) = cli.log_defaults();
    telemetry::init_logs_with(format, default_level);
    match cli.execute().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, for humans and log collectors alike; `{:#}` keeps the context chain.
            tracing::error!("{error:#}");
            // Not `eprintln!`: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "polyai-relay: {error:#}");
            ExitCode::FAILURE
        }
    }
}
