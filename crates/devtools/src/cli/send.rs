//! `send`: sign and POST events like PolyAI; with `--count`/`--concurrency`/`--rate`, a load generator.

use clap::Args;
use polyai_relay::{
    cli::stdout,
    config::{parse_size, secret},
};
use secrecy::SecretString;

use crate::sender::{self, SendConfig, SendScheme};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The receiver's webhook URL, e.g. http://127.0.0.1:8080/polyai-events.
    #[arg(long)]
    url: String,
    /// Signing secret (the endpoint's).
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET", value_parser = polyai_relay::config::secret_value, hide_env_values = true)]
    secret: Option<SecretString>,
    /// The signing secret from a file (a trailing newline is not part of it).
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET_FILE")]
    secret_file: Option<std::path::PathBuf>,
    /// Which message to sign.
    #[arg(long, value_enum, default_value = "timestamped")]
    scheme: SendScheme,
    /// Event type.
    #[arg(long = "type", default_value = "conversation.completed")]
    event_type: String,
    /// Conversation id; each event gets a fresh one when omitted.
    #[arg(long)]
    conversation_id: Option<String>,
    /// `data.environment` of the events.
    #[arg(long, default_value = "live")]
    environment: String,
    /// Events to send (with --duration and no --count: as many as fit).
    #[arg(long)]
    count: Option<usize>,
    /// Send for this long (e.g. 20s), then stop and report.
    #[arg(long, value_parser = |s: &str| polyai_relay::config::parse_duration(s))]
    duration: Option<std::time::Duration>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests per second at most (all connections together).
    #[arg(long)]
    rate: Option<f64>,
    /// Pad each body to about this size (e.g. 600, 1KiB).
    #[arg(long, value_parser = |s: &str| parse_size(s))]
    body_size: Option<usize>,
}

impl SendArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be a positive number of requests per second");
        }
        let count = match (self.count, self.duration) {
            (Some(count), _) => count,
            (None, Some(_)) => usize::MAX,
            (None, None) => 1,
        };
        let single = count == 1;
        let secret = secret::require(
            "POLYAI_WEBHOOK_SECRET",
            self.secret.as_ref(),
            self.secret_file.as_deref(),
            "to sign (--secret or --secret-file)",
        )?;
        let report = sender::send(SendConfig {
            url: self.url,
            secret,
            scheme: self.scheme,
            event_type: self.event_type,
            conversation_id: self.conversation_id,
            environment: self.environment,
            count,
            duration: self.duration,
            concurrency: self.concurrency,
            rate: self.rate,
            body_size: self.body_size,
        })
        .await?;
        // A reader that stops early (`send … | head -1`) has what it wanted: not an error.
        if let (true, Some(sent)) = (single, &report.first) {
            let status = sent.status.map(|s| s.to_string()).unwrap_or_else(|| "no answer".into());
            stdout::line(format_args!(
                "{status} {} (conversation {}) in {:.1} ms",
                sent.event_id,
                sent.conversation_id,
                sent.latency.as_secs_f64() * 1000.0
            ));
        } else {
            stdout::line(format_args!("{}", report.summary()));
        }
        anyhow::ensure!(report.all_succeeded(), "not every request was answered 2xx");
        Ok(())
    }
}
