//! `check`: is this configuration going to work? One line per check, with the fix for each
//! failure; a non-zero exit if any check failed. With `RELAY_PROJECTS_FILE`, every project is
//! checked (or only `--project NAME`), each line naming its project.

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{
    run::{self, ServeArgs, WorkArgs},
    stdout,
    target::ProjectsTarget,
};
use crate::{
    app::Components,
    config::{secret, BrokerSettings, Chosen, ProjectEntry, ReceiverArgs, LEAVES_ALONE},
    polyai::{advice_for, ListRequest, PolyaiClient, SettingNames},
    queue::{embedded, Backend, OpenError},
    telemetry::Metrics,
};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    target: ProjectsTarget,
    /// The receiver's settings, checked as `run` and `serve` check them at start-up.
    #[command(flatten)]
    receiver: ReceiverArgs,
}

/// Whether settings were given to `check` as flags (anything but `--project`): the start-up
/// checks read the environment only, as a deployment's `serve` and `work` do, and would not see
/// them.
fn settings_given_as_flags() -> bool {
    let mut args = std::env::args().skip_while(|arg| arg != "check").skip(1);
    while let Some(arg) = args.next() {
        if arg == "--project" {
            args.next();
        } else if arg.starts_with('-') && !arg.starts_with("--project=") {
            return true;
        }
    }
    false
}

/// The line of a start-up check: whether `command` would start with the environment's
/// settings, all of them read and checked as it reads and checks them.
fn start_up(what: &str, command: &str, checked: anyhow::Result<()>) -> Line {
    match checked {
        Ok(()) => Line::Pass(format!("{what} settings: `{command}` would start with them")),
        Err(error) => Line::Fail(format!("{what} settings: {error:#}")),
    }
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
            Self::Pass(text) => stdout::line(format_args!("✓ {text}")),
            Self::Warn(text) => stdout::line(format_args!("! {text}")),
            Self::Fail(text) => stdout::line(format_args!("✗ {text}")),
        }
    }

    /// The same check, its text after `prefix` (which names the project).
    fn prefixed(self, prefix: &str) -> Self {
        match self {
            Self::Pass(text) => Self::Pass(format!("{prefix}{text}")),
            Self::Warn(text) => Self::Warn(format!("{prefix}{text}")),
            Self::Fail(text) => Self::Fail(format!("{prefix}{text}")),
        }
    }
}

impl CheckArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let chosen = self.target.choice.choose();
        let mut lines = match &chosen {
            Ok(Chosen::Environment) => vec![],
            Ok(Chosen::File(entries)) => {
                let names: Vec<&str> = entries.iter().map(|p| p.name.as_str()).collect();
                vec![Line::Pass(format!("RELAY_PROJECTS_FILE: checking project(s) {}", names.join(", ")))]
            }
            Err(error) => vec![Line::Fail(error.to_string())],
        };
        lines.extend(self.start_up(chosen.as_ref().ok()));
        match self.target.broker.settings() {
            Ok(broker) => lines.extend(reach_broker(&broker).await),
            Err(error) => lines.push(Line::Fail(error.to_string())),
        }
        match &chosen {
            Ok(Chosen::Environment) => match self.target.api.settings() {
                Ok(api) => {
                    lines.push(Line::Pass(format!(
                        "API settings: {} (account {}, project {})",
                        api.base_url, api.account_id, api.project_id
                    )));
                    lines.push(probe(&PolyaiClient::new(&api)?, SettingNames::Variables).await);
                }
                Err(error) => lines.push(Line::Fail(error.to_string())),
            },
            Ok(Chosen::File(entries)) => {
                lines.extend(self.refusals());
                let mut held = Vec::new();
                for entry in entries {
                    let (project_lines, secrets) = self.project(entry).await?;
                    lines.extend(project_lines);
                    held.push((&entry.name, secrets));
                }
                let held: Vec<_> = held.iter().map(|(name, secrets)| (*name, secrets.iter().collect())).collect();
                if let Err(error) = secret::refuse_shared(&held) {
                    lines.push(Line::Fail(error.to_string()));
                }
            }
            Err(_) => {}
        }
        for line in &lines {
            line.print();
        }
        let failed = lines.iter().filter(|l| matches!(l, Line::Fail(_))).count();
        anyhow::ensure!(failed == 0, "{failed} check(s) failed");
        Ok(())
    }

    /// What `serve` and `work` would refuse at start-up: every setting, read from the
    /// environment as they read it. A warning instead of the receiver's line when no webhook
    /// secret is given at all, as a worker alone needs none.
    fn start_up(&self, chosen: Option<&Chosen>) -> Vec<Line> {
        if settings_given_as_flags() {
            return vec![Line::Warn(
                "start-up settings not checked: `check` reads them from the environment, as `serve` and `work` do, and some were given as flags".into(),
            )];
        }
        let receiver = &self.receiver;
        let no_secret = match chosen {
            Some(Chosen::File(entries)) => entries.iter().all(|entry| entry.webhook_secret_file.is_none()),
            _ => receiver.webhook_secret.is_none() && receiver.webhook_secret_file.is_none(),
        };
        let receiving = if no_secret {
            Line::Warn("no webhook secret is set: `run` and `serve` need one (`register` prints one)".into())
        } else {
            start_up("receiver", "serve", run::check_from_env::<ServeArgs>().map(drop))
        };
        let (working, leaving_out) = match run::check_from_env::<WorkArgs>() {
            Ok(components) => (Ok(()), leaving_out(&components)),
            Err(error) => (Err(error), Vec::new()),
        };
        let mut lines = vec![receiving, start_up("worker", "work", working)];
        lines.extend(leaving_out.into_iter().map(Line::Warn));
        lines
    }

    /// One-project variables set beside the file, which the relay would refuse at start-up.
    fn refusals(&self) -> Vec<Line> {
        [self.receiver.refuse_env_project(), self.target.api.refuse_env_project()]
            .into_iter()
            .filter_map(|r| r.err())
            .map(|e| Line::Fail(e.to_string()))
            .collect()
    }

    /// The checks of one project of the file: its secret files, its API settings, its key; with
    /// the webhook secrets it read, which no other project may hold.
    async fn project(&self, entry: &ProjectEntry) -> anyhow::Result<(Vec<Line>, Vec<SecretString>)> {
        let prefix = format!("project `{}`: ", entry.name);
        let mut lines = Vec::new();
        if entry.webhook_secret_file.is_none() {
            lines.push(Line::Warn(format!(
                "{prefix}webhook_secret_file is not set: `run` and `serve` need it (`register --project {}` prints one)",
                entry.name
            )));
        }
        let files = [
            ("webhook_secret_file", &entry.webhook_secret_file),
            ("webhook_secret_previous_file", &entry.webhook_secret_previous_file),
            ("platform_api_key_file", &entry.platform_api_key_file),
        ];
        let mut webhook_secrets = Vec::new();
        for (field, path) in files {
            let Some(path) = path else { continue };
            // The error names the project and the field, never the content.
            lines.push(match secret::read_file(&entry.label(field), path) {
                Ok(read) => {
                    if field != "platform_api_key_file" {
                        webhook_secrets.push(read);
                    }
                    Line::Pass(format!("{prefix}{field} is readable"))
                }
                Err(error) => Line::Fail(error.to_string()),
            });
        }
        match self.target.api.project(entry) {
            Ok(api) => {
                lines.push(Line::Pass(format!(
                    "{prefix}API settings: {} (account {}, project {})",
                    api.base_url, api.account_id, api.project_id
                )));
                lines.push(probe(&PolyaiClient::new(&api)?, SettingNames::ProjectFields).await.prefixed(&prefix));
            }
            Err(error) => lines.push(Line::Fail(error.to_string())),
        }
        Ok((lines, webhook_secrets))
    }
}

/// What the worker's reconciliation would say at start-up of the projects it leaves out.
fn leaving_out(components: &Components) -> Vec<String> {
    let Some((worker, settings)) = components.worker.as_ref().and_then(|w| Some((w, w.reconcile.as_ref()?))) else {
        return Vec::new();
    };
    let each = settings.left_out.iter().map(|left| format!("project `{}`: {LEAVES_ALONE}: {}", left.project, left.why));
    let off = settings.off_when_all_left_out(worker.projects.len()).map(|why| format!("reconciliation is off: {why}"));
    each.chain(off).collect()
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
async fn probe(client: &PolyaiClient, names: SettingNames) -> Line {
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
        Err(error) => Line::Fail(format!("API: {error}; {}", advice_for(&error, names))),
    }
}
