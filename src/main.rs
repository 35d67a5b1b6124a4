use std::process::ExitCode;

use clap::Parser;
use polyai_relay::{cli::Cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logs(cli.log.log_format);
    match cli.execute().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, for humans and log collectors alike; `{:#}` keeps the context chain.
            tracing::error!("{error:#}");
            eprintln!("polyai-relay: {error:#}");
            ExitCode::FAILURE
        }
    }
}
