//! `mock-api`: a local stand-in for PolyAI's APIs, for development, demos and load tests.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use url::Url;

use polyai_relay::{
    config::{
        parse_duration,
        secret::{self, secret_value},
        ConfigError,
    },
    shutdown,
};

use crate::mock_api::{
    parse_tenants, EmitConfig, EmitPace, EmitScheme, Faults, MockApi, MockConfig, DEFAULT_ACCOUNT_ID, DEFAULT_API_KEY,
    DEFAULT_PROJECT_ID,
};

/// clap value parser for a duration that names its variable in the error.
fn duration(variable: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| parse_duration(text).map_err(|e| format!("{variable}: {e}"))
}

/// `Retry-After` carries whole seconds, so a bare number is unambiguous here; `1500ms` rounds up.
fn retry_after(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_duration(text).map_err(|e| format!("MOCK_API_RETRY_AFTER: {e}")),
    }
}

fn fraction(variable: &'static str) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text| match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{variable}: `{text}` is not a fraction from 0 to 1")),
    }
}

fn instant(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map_err(|_| format!("MOCK_API_WINDOW_END: `{text}` is not an RFC 3339 time such as 2026-11-20T09:00:00Z"))
}

#[derive(Debug, Args)]
pub struct MockApiArgs {
    /// Address to serve both host families on (port 0 picks a free port).
    #[arg(long, env = "MOCK_API_LISTEN", default_value = "127.0.0.1:8099")]
    listen: SocketAddr,
    /// `x-api-key` accepted on `/v3/...` [default: mock-api-key]. Variables of its own, so a real
    /// PolyAI key exported for the relay never becomes the mock's.
    #[arg(long, env = "MOCK_API_KEY", value_parser = secret_value, hide_env_values = true)]
    api_key: Option<SecretString>,
    #[arg(long, env = "MOCK_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// `x-api-key` accepted on `/v1/...` (webhook endpoints, agents) [default: the API key].
    #[arg(long, env = "MOCK_API_PLATFORM_KEY", value_parser = secret_value, hide_env_values = true)]
    platform_api_key: Option<SecretString>,
    #[arg(long, env = "MOCK_API_PLATFORM_KEY_FILE")]
    platform_api_key_file: Option<PathBuf>,
    /// The account (workspace) id served; ids no tenant has answer 404.
    #[arg(long, env = "MOCK_API_ACCOUNT_ID", default_value = DEFAULT_ACCOUNT_ID)]
    account_id: String,
    /// The project (agent) id served; ids no tenant has answer 404.
    #[arg(long, env = "MOCK_API_PROJECT_ID", default_value = DEFAULT_PROJECT_ID)]
    project_id: String,
    /// Another account and project to serve beside the one above (the tenant named `default`),
    /// with its own keys and conversations; a key is accepted on its own tenant's paths only.
    /// Repeat the flag, or separate tenants with `;` in the variable. Comma-separated fields:
    /// name=NAME,account=ACCOUNT_ID,project=PROJECT_ID,key=KEY (or key-file=PATH); optional
    /// platform-key=KEY (or platform-key-file=PATH) and emit-to=URL with emit-secret=SECRET (or
    /// emit-secret-file=PATH), sent at --emit-rate. While serving, POST
    /// /_mock/tenants/NAME/revoke or /restore, or PUT /_mock/tenants/NAME/faults, switch one
    /// tenant's key or faults.
    #[arg(
        long = "tenant",
        env = "MOCK_API_TENANTS",
        value_name = "FIELDS",
        value_delimiter = ';',
        value_parser = secret_value,
        hide_env_values = true
    )]
    tenants: Vec<SecretString>,
    /// Seed of the generated conversations: the same seed serves the same data.
    #[arg(long, env = "MOCK_API_SEED", default_value_t = crate::mock_api::config::DEFAULT_SEED)]
    seed: u64,
    /// How many conversations to generate.
    #[arg(long, env = "MOCK_API_CONVERSATIONS", default_value_t = 200)]
    conversations: usize,
    /// Conversations start within this long before the window's end.
    #[arg(long, env = "MOCK_API_WINDOW", default_value = "24h", value_parser = duration("MOCK_API_WINDOW"))]
    window: Duration,
    /// End of the window (RFC 3339) [default: start-up time]; fix it for identical data across runs.
    #[arg(long, env = "MOCK_API_WINDOW_END", value_parser = instant)]
    window_end: Option<OffsetDateTime>,
    /// Delay added to every API answer.
    #[arg(long, env = "MOCK_API_LATENCY", default_value = "0ms", value_parser = duration("MOCK_API_LATENCY"))]
    latency: Duration,
    /// Fraction of conversation/audio requests answered 429 with Retry-After.
    #[arg(long = "rate-429", env = "MOCK_API_RATE_429", default_value = "0", value_parser = fraction("MOCK_API_RATE_429"))]
    rate_429: f64,
    /// Retry-After of those 429s, in seconds.
    #[arg(long, env = "MOCK_API_RETRY_AFTER", default_value = "1", value_parser = retry_after)]
    retry_after: Duration,
    /// Fraction of conversation/audio requests answered 503.
    #[arg(long = "rate-5xx", env = "MOCK_API_RATE_5XX", default_value = "0", value_parser = fraction("MOCK_API_RATE_5XX"))]
    rate_5xx: f64,
    /// The first N by-id requests of each conversation answer 404 ("not ingested yet").
    #[arg(long, env = "MOCK_API_NOT_FOUND_UNTIL", default_value_t = 0)]
    not_found_until: u32,
    /// POST signed webhooks about the generated conversations to this URL.
    #[arg(long, env = "MOCK_API_EMIT_TO")]
    emit_to: Option<Url>,
    /// Webhooks per second (of each emitting tenant).
    #[arg(long, env = "MOCK_API_EMIT_RATE", default_value_t = 5.0)]
    emit_rate: f64,
    /// Webhooks in all [default: one per finished conversation, plus one per handoff].
    #[arg(long, env = "MOCK_API_EMIT_COUNT")]
    emit_count: Option<usize>,
    /// Signing secret of the emitted webhooks (the receiver's secret).
    #[arg(long, env = "MOCK_API_EMIT_SECRET", value_parser = secret_value, hide_env_values = true)]
    emit_secret: Option<SecretString>,
    #[arg(long, env = "MOCK_API_EMIT_SECRET_FILE")]
    emit_secret_file: Option<PathBuf>,
    /// What is signed: `timestamped` ("{timestamp}.{body}") or `body`.
    #[arg(long, env = "MOCK_API_EMIT_SCHEME", value_enum, default_value = "timestamped")]
    emit_scheme: EmitScheme,
}

impl MockApiArgs {
    pub fn config(&self) -> Result<MockConfig, ConfigError> {
        let api_key = secret::resolve("MOCK_API_KEY", self.api_key.as_ref(), self.api_key_file.as_deref())?
            .unwrap_or_else(|| SecretString::from(DEFAULT_API_KEY));
        let platform_api_key = secret::resolve(
            "MOCK_API_PLATFORM_KEY",
            self.platform_api_key.as_ref(),
            self.platform_api_key_file.as_deref(),
        )?;
        let emit = match &self.emit_to {
            Some(url) => Some(EmitConfig {
                url: url.clone(),
                rate: self.emit_rate,
                count: self.emit_count,
                secret: secret::require(
                    "MOCK_API_EMIT_SECRET",
                    self.emit_secret.as_ref(),
                    self.emit_secret_file.as_deref(),
                    "to sign emitted webhooks",
                )?,
                scheme: self.emit_scheme,
            }),
            None => None,
        };
        let pace = EmitPace { rate: self.emit_rate, count: self.emit_count, scheme: self.emit_scheme };
        let tenants = parse_tenants(&self.tenants, pace)?;
        let config = MockConfig {
            api_key,
            platform_api_key,
            account_id: self.account_id.clone(),
            project_id: self.project_id.clone(),
            seed: self.seed,
            conversations: self.conversations,
            window: self.window,
            window_end: self.window_end,
            faults: Faults {
                latency: self.latency,
                rate_429: self.rate_429,
                retry_after: self.retry_after,
                rate_5xx: self.rate_5xx,
                not_found_until: self.not_found_until,
            },
            emit,
            tenants,
        };
        config.validate()?;
        Ok(config)
    }

    pub async fn execute(self) -> anyhow::Result<()> {
        let config = self.config()?;
        let faults = &config.faults;
        tracing::info!(
            latency_ms = faults.latency.as_millis() as u64,
            rate_429 = faults.rate_429,
            retry_after_s = faults.retry_after.as_secs(),
            rate_5xx = faults.rate_5xx,
            not_found_until = faults.not_found_until,
            "mock API faults"
        );
        let shutdown = shutdown::on_signal();
        let running = MockApi::bind(config, self.listen, shutdown)
            .await
            .with_context(|| format!("MOCK_API_LISTEN: cannot start the mock API on {}", self.listen))?;
        running.stopped.await.context("mock API server panicked")?.context("mock API server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}
