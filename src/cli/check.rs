//! `check`: is this configuration going to work? One line per check, with the fix for each
//! failure; a non-zero exit if any check failed.

use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ApiArgs, BrokerArgs, BrokerSettings},
    polyai::{advice, ListRequest, PolyaiClient},
    queue::{embedded, Backend, OpenError},
    telemetry::Metrics,
};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Checked for presence only (the receiver needs it).
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET", value_parser = crate::config::secret_value, hide_env_values = true)]
    webhook_secret: Option<SecretString>,
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<std::path::PathBuf>,
}

/// The outcome of one check, printed as one line.
enum Line {
    Pass(String),
    Warn(String),
    Fail(String),
}

impl Line {
    fn print(&self) {
        match self {
            Self::Pass(text) => println!("✓ {text}"),
            Self::Warn(text) => println!("! {text}"),
            Self::Fail(text) => println!("✗ {text}"),
        }
    }
}

impl CheckArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let mut lines = vec![self.webhook_secret()];
        match self.broker.settings() {
            Ok(broker) => lines.extend(reach_broker(&broker).await),
            Err(error) => lines.push(Line::Fail(error.to_string())),
        }
        match self.api.settings() {
            Ok(api) => {
                lines.push(Line::Pass(format!(
                    "API settings: {} (account {}, project {})",
                    api.base_url, api.account_id, api.project_id
                )));
                lines.push(probe(&PolyaiClient::new(&api)?).await);
            }
            Err(error) => lines.push(Line::Fail(error.to_string())),
        }
        for line in &lines {
            line.print();
        }
        let failed = lines.iter().filter(|l| matches!(l, Line::Fail(_))).count();
        anyhow::ensure!(failed == 0, "{failed} check(s) failed");
        Ok(())
    }

    fn webhook_secret(&self) -> Line {
        let present = self.webhook_secret.as_ref().is_some_and(|s| !s.expose_secret().trim().is_empty())
            || self.webhook_secret_file.as_ref().is_some_and(|p| p.exists());
        if present {
            Line::Pass("webhook secret is set".into())
        } else {
            Line::Warn("POLYAI_WEBHOOK_SECRET is not set: `run` and `serve` need it (`register` prints one)".into())
        }
    }
}

/// Reaches each RabbitMQ address (through the relay's own connector: same TLS, same errors), or
/// opens the embedded queue the relay would use, and says so.
async fn reach_broker(broker: &BrokerSettings) -> Vec<Line> {
    let Some(target) = &broker.amqp_url else {
        let dir = broker.data_dir.display();
        return vec![match Backend::open(broker, Metrics::isolated(), CancellationToken::new()) {
            Ok(_) => Line::Pass(format!("embedded queue in {dir} opens (AMQP_URL is unset)")),
            Err(OpenError::Embedded(embedded::OpenError::InUse { .. })) => {
                Line::Pass(format!("embedded queue in {dir} is in use by a running relay"))
            }
            Err(error) => Line::Fail(error.to_string()),
        }];
    };
    // One line per address, naming its host only: the URL holds a password.
    crate::queue::amqp::reach_each(target)
        .await
        .into_iter()
        .map(|(host, result)| match result {
            Ok(()) => Line::Pass(format!("RabbitMQ at {host} accepts the connection")),
            Err(error) => Line::Fail(format!(
                "RabbitMQ at {host}: {error}; check AMQP_URL's host, credentials and vhost (%2f is `/`), and the AMQP_TLS_* files"
            )),
        })
        .collect()
}

/// One `limit=1` list request over the last day, the quickstart's smoke test.
async fn probe(client: &PolyaiClient) -> Line {
    let now = OffsetDateTime::now_utc();
    let request = ListRequest {
        start_time: Some(now - Duration::from_secs(86_400)),
        end_time: Some(now),
        client_env: Some("live".into()),
        limit: Some(1),
        ..ListRequest::default()
    };
    match client.list(&request).await {
        Ok(page) if page.conversations.is_empty() => Line::Warn(
            "the API key works, but no live conversation in the last 24 h: check client_env (sandbox? pre-release?) or the time window"
                .into(),
        ),
        Ok(_) => Line::Pass("the API key works: conversations listed".into()),
        Err(error) => Line::Fail(format!("API: {error}; {}", advice(&error))),
    }
}
