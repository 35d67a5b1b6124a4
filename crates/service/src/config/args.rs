//! The flags and environment variables of design §2, as clap parses them.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use super::amqp::{self, AmqpTarget, Pem, TlsSettings};
use super::api_args::{ApiArgs, AudioArgs};
use super::broker_limit;
use super::defaults;
use super::{
    secret::{self, secret_value},
    values, BrokerSettings, ConfigError, EventTypes, Forwarding, ProjectEntry, ProjectName, ProjectsFile, Topology,
    WorkerSettings,
};

/// clap value parser for a duration that names its variable in the error.
pub(super) fn duration(
    variable: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| values::parse_duration(text).map_err(|e| format!("{variable}: {e}"))
}

/// clap value parser for a yes/no setting (see [`values::parse_bool`]) that names its variable.
pub(super) fn boolean(variable: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync + 'static {
    move |text| values::parse_bool(text).map_err(|e| format!("{variable}: {e}"))
}

pub(super) fn size(variable: &'static str) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |text| values::parse_size(text).map_err(|e| format!("{variable}: {e}"))
}

/// Requests per second, or `None` for unlimited. A newtype because clap reads a bare
/// `Option<f64>` field as "optional f64", not as a value that may say "unlimited".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub Option<f64>);

/// The slowest `RELAY_API_RATE`: one call an hour. Slower, a turn would be further off than the
/// longest a turn is believed ahead, and the spacing of a few turns would overflow the clock.
const SLOWEST_RATE: f64 = 1.0 / 3600.0;

fn rate(text: &str) -> Result<Rate, String> {
    match text.trim() {
        "" | "unlimited" | "0" => Ok(Rate(None)),
        number => match number.parse::<f64>() {
            Ok(r) if r.is_finite() && r >= SLOWEST_RATE => Ok(Rate(Some(r))),
            Ok(r) if r.is_finite() && r > 0.0 => Err(format!(
                "RELAY_API_RATE: `{number}` is slower than one call an hour (0.00028 per second), the slowest it takes"
            )),
            _ => Err(format!(
                "RELAY_API_RATE: `{number}` is not a positive number of requests per second or `unlimited`"
            )),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format: `json` for collectors, `pretty` for a terminal. Levels come from RUST_LOG.
    #[arg(long, env = "RELAY_LOG_FORMAT", value_enum, default_value = "json", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Topic exchange that receives verified raw events.
    #[arg(long, env = "RELAY_EVENTS_EXCHANGE", default_value = defaults::EVENTS_EXCHANGE)]
    pub events_exchange: String,
    /// Quorum queue the worker consumes.
    #[arg(long, env = "RELAY_ENRICH_QUEUE", default_value = defaults::ENRICH_QUEUE)]
    pub enrich_queue: String,
    /// Topic exchange that receives enriched records.
    #[arg(long, env = "RELAY_CONVERSATIONS_EXCHANGE", default_value = defaults::CONVERSATIONS_EXCHANGE)]
    pub conversations_exchange: String,
    /// Ready-made downstream queue bound `#` to the conversations exchange; `off` to skip it.
    #[arg(long, env = "RELAY_CONVERSATIONS_QUEUE", default_value = defaults::CONVERSATIONS_QUEUE)]
    pub conversations_queue: String,
    /// Fanout exchange for events that can never succeed.
    #[arg(long, env = "RELAY_DEAD_EXCHANGE", default_value = defaults::DEAD_EXCHANGE)]
    pub dead_exchange: String,
    /// Quorum queue bound to the dead-letter exchange.
    #[arg(long, env = "RELAY_DEAD_QUEUE", default_value = defaults::DEAD_QUEUE)]
    pub dead_queue: String,
    /// Event types forwarded (comma-separated); `*` forwards all. A project's `events` overrides it.
    #[arg(long, env = "RELAY_EVENTS", default_value = defaults::EVENTS)]
    pub events: String,
    /// Environments forwarded (comma-separated), or `all`; a project's `environments` overrides it.
    #[arg(long, env = "RELAY_ENVIRONMENTS", default_value = "all")]
    pub environments: String,
    /// Deliveries of one message before the broker dead-letters it (crash-loop backstop).
    #[arg(long, env = "RELAY_DELIVERY_LIMIT", default_value_t = defaults::DELIVERY_LIMIT)]
    pub delivery_limit: u32,
    /// Stream recording every raw event and record (reconciliation's ledger); `off` to skip it.
    #[arg(long, env = "RELAY_CONVERSATIONS_LOG", default_value = defaults::CONVERSATIONS_LOG)]
    pub conversations_log: String,
    /// How long the stream keeps what it records.
    #[arg(long, env = "RELAY_LOG_RETENTION", default_value = defaults::LOG_RETENTION, value_parser = duration("RELAY_LOG_RETENTION"))]
    pub log_retention: Duration,
}

impl TopologyArgs {
    /// What a project forwards unless it says otherwise (`RELAY_EVENTS`, `RELAY_ENVIRONMENTS`):
    /// read here, beside the bindings, because every command that queues or reconciles events
    /// needs it.
    pub fn forwarding(&self) -> Result<Forwarding, ConfigError> {
        let types = values::parse_list(&self.events);
        let event_types = if types.iter().any(|t| t == "*") {
            EventTypes::All
        } else if types.is_empty() {
            return Err(ConfigError::new("RELAY_EVENTS", "RELAY_EVENTS is empty; list event types or use `*`"));
        } else {
            EventTypes::Only(types)
        };
        let environments = match self.environments.trim() {
            "" | "all" | "*" => None,
            list => Some(values::parse_list(list)),
        };
        Ok(Forwarding { event_types, environments })
    }

    pub fn settings(&self) -> Result<Topology, ConfigError> {
        let event_types = self.forwarding()?.event_types;
        let conversations_queue = values::optional_name(&self.conversations_queue);
        Ok(Topology {
            events_exchange: self.events_exchange.clone(),
            enrich_queue: self.enrich_queue.clone(),
            conversations_exchange: self.conversations_exchange.clone(),
            conversations_queue,
            dead_exchange: self.dead_exchange.clone(),
            dead_queue: self.dead_queue.clone(),
            event_types,
            delivery_limit: self.delivery_limit.max(1),
            conversations_log: values::optional_name(&self.conversations_log),
            log_retention: self.log_retention,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL (`amqp://` or `amqps://`). Unset: the embedded queue in RELAY_DATA_DIR.
    #[arg(long, env = "AMQP_URL", value_parser = secret_value, hide_env_values = true)]
    pub amqp_url: Option<SecretString>,
    /// The URL holds the broker's password, so it can come from a file like the other secrets.
    #[arg(long, env = "AMQP_URL_FILE")]
    pub amqp_url_file: Option<PathBuf>,
    /// Extra trusted root certificates (PEM) for `amqps://`, on top of the system's.
    #[arg(long, env = "AMQP_TLS_CA_FILE")]
    pub amqp_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM, chain first) for brokers that authenticate clients by certificate.
    #[arg(long, env = "AMQP_TLS_CERT_FILE")]
    pub amqp_tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "AMQP_TLS_KEY_FILE")]
    pub amqp_tls_key_file: Option<PathBuf>,
    /// Check that the broker's certificate names the host of the URL. Turning it off needs
    /// AMQP_TLS_CA_FILE, which is then the only trusted root, and logs a warning.
    #[arg(long, env = "AMQP_TLS_VERIFY_HOSTNAME", default_value = "true", action = clap::ArgAction::Set, value_parser = boolean("AMQP_TLS_VERIFY_HOSTNAME"))]
    pub amqp_tls_verify_hostname: bool,
    /// The broker's max_message_size: larger messages are refused before they are sent. Raise it
    /// together with the broker's (RabbitMQ 3.x's default is 128MiB).
    #[arg(long, env = "RELAY_BROKER_MAX_MESSAGE", default_value = defaults::BROKER_MAX_MESSAGE, value_parser = broker_limit::max_message)]
    pub broker_max_message: usize,
    /// Where the embedded queue and its JSON Lines output live (used when AMQP_URL is unset).
    #[arg(long, env = "RELAY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub topology: TopologyArgs,
}

impl BrokerArgs {
    pub fn settings(&self) -> Result<BrokerSettings, ConfigError> {
        // An empty AMQP_URL means "unset" (the embedded queue); an empty file is a mistake.
        let inline = self.amqp_url.as_ref().filter(|url| !url.expose_secret().trim().is_empty());
        let amqp_url = match secret::resolve("AMQP_URL", inline, self.amqp_url_file.as_deref())? {
            Some(text) => {
                let variable = if inline.is_some() { "AMQP_URL" } else { "AMQP_URL_FILE" };
                let addresses = amqp::parse_addresses(variable, &text)?;
                let target = AmqpTarget { addresses, tls: self.tls()?, max_message: self.broker_max_message };
                let tls_file = if target.tls.ca_pem.is_some() { "AMQP_TLS_CA_FILE" } else { "AMQP_TLS_CERT_FILE" };
                if !target.uses_tls() && (target.tls.ca_pem.is_some() || target.tls.client.is_some()) {
                    let message = format!("{tls_file} is set but no address of {variable} is amqps://");
                    return Err(ConfigError::new(tls_file, message));
                }
                if !target.uses_tls() && !target.tls.verify_hostname {
                    let message = format!("AMQP_TLS_VERIFY_HOSTNAME is set but no address of {variable} is amqps://");
                    return Err(ConfigError::new("AMQP_TLS_VERIFY_HOSTNAME", message));
                }
                // Built once here so that what only rustls can tell (a key that is not the
                // certificate's, a CA certificate that cannot be a root) stops the start, rather
                // than failing every connection while the relay answers 503.
                if target.uses_tls() {
                    crate::queue::amqp::tls::connector(&target.tls)
                        .map_err(|message| ConfigError::new("AMQP_TLS_CA_FILE", message))?;
                }
                Some(target)
            }
            None => None,
        };
        Ok(BrokerSettings { amqp_url, data_dir: self.data_dir.clone(), topology: self.topology.settings()? })
    }

    fn tls(&self) -> Result<TlsSettings, ConfigError> {
        let ca_pem = match &self.amqp_tls_ca_file {
            Some(path) => Some(
                String::from_utf8_lossy(&amqp::read_pem("AMQP_TLS_CA_FILE", path, Pem::Certificates)?).into_owned(),
            ),
            None => None,
        };
        let client = match (&self.amqp_tls_cert_file, &self.amqp_tls_key_file) {
            (Some(cert), Some(key)) => Some((
                amqp::read_pem("AMQP_TLS_CERT_FILE", cert, Pem::Certificates)?,
                amqp::read_pem("AMQP_TLS_KEY_FILE", key, Pem::PrivateKey)?.into(),
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "AMQP_TLS_KEY_FILE",
                    "AMQP_TLS_CERT_FILE is set: AMQP_TLS_KEY_FILE is needed too",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "AMQP_TLS_CERT_FILE",
                    "AMQP_TLS_KEY_FILE is set: AMQP_TLS_CERT_FILE is needed too",
                ))
            }
        };
        Ok(TlsSettings { ca_pem, client, verify_hostname: self.amqp_tls_verify_hostname })
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Parallel API calls at most.
    #[arg(long, env = "RELAY_API_CONCURRENCY", default_value_t = defaults::API_CONCURRENCY)]
    pub api_concurrency: usize,
    /// API calls per second at most, per project, or `unlimited`.
    #[arg(long, env = "RELAY_API_RATE", default_value = "unlimited", value_parser = rate)]
    pub api_rate: Rate,
    /// Attempts per event before it is dead-lettered.
    #[arg(long, env = "RELAY_MAX_ATTEMPTS", default_value_t = defaults::MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    #[arg(long, env = "RELAY_RETRY_BASE_DELAY", default_value = defaults::RETRY_BASE_DELAY, value_parser = duration("RELAY_RETRY_BASE_DELAY"))]
    pub retry_base_delay: Duration,
    /// Longest retry delay of the backoff.
    #[arg(long, env = "RELAY_RETRY_MAX_DELAY", default_value = defaults::RETRY_MAX_DELAY, value_parser = duration("RELAY_RETRY_MAX_DELAY"))]
    pub retry_max_delay: Duration,
    /// How often a project paused by a rejected key checks whether the key works again.
    #[arg(long, env = "RELAY_AUTH_PROBE_INTERVAL", default_value = defaults::AUTH_PROBE_INTERVAL, value_parser = duration("RELAY_AUTH_PROBE_INTERVAL"))]
    pub auth_probe_interval: Duration,
    #[command(flatten)]
    pub audio: AudioArgs,
    #[command(flatten)]
    pub reconcile: super::ReconcileArgs,
}

impl WorkerArgs {
    /// `file`: `RELAY_PROJECTS_FILE`, when the relay serves the projects it lists; `forwarding`:
    /// what a project forwards unless it says otherwise.
    pub fn settings(
        &self,
        file: Option<&ProjectsFile>,
        forwarding: &Forwarding,
    ) -> Result<WorkerSettings, ConfigError> {
        let projects = self.api.projects(file)?;
        if self.api_concurrency == 0 {
            return Err(ConfigError::new("RELAY_API_CONCURRENCY", "RELAY_API_CONCURRENCY must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::new("RELAY_MAX_ATTEMPTS", "RELAY_MAX_ATTEMPTS must be at least 1"));
        }
        Ok(WorkerSettings {
            projects,
            concurrency: self.api_concurrency,
            rate: self.api_rate.0,
            max_attempts: self.max_attempts,
            retry_base_delay: self.retry_base_delay,
            retry_max_delay: self.retry_max_delay.max(self.retry_base_delay),
            auth_probe_interval: self.auth_probe_interval,
            audio: self.audio.settings(),
            reconcile: self.reconcile.settings(&forwarded(file.map(|f| f.projects.as_slice()), forwarding))?,
        })
    }
}

/// Each project the relay serves (the file's, or the environment's one), with what it forwards.
pub fn forwarded(file: Option<&[ProjectEntry]>, defaults: &Forwarding) -> Vec<(ProjectName, Forwarding)> {
    match file {
        Some(entries) => entries.iter().map(|entry| (entry.name.clone(), entry.forwarding(defaults))).collect(),
        None => vec![(ProjectName::default(), defaults.clone())],
    }
}

/// Path segments go into URLs: refuse what would change the path rather than escape it silently.
pub(super) fn required_id(variable: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let value = value.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(ConfigError::new(variable, format!("{variable} is required")));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(ConfigError::new(
            variable,
            format!("{variable} `{value}` may hold only letters, digits, `-`, `_` and `.`"),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    #[test]
    fn an_api_rate_is_a_positive_number_from_one_call_an_hour() {
        assert_eq!(rate("2.5"), Ok(Rate(Some(2.5))));
        assert_eq!(rate(" unlimited "), Ok(Rate(None)));
        assert_eq!(rate("0"), Ok(Rate(None)));
        assert!(rate("0.0003").is_ok(), "a little over one an hour");
        for slow in ["0.0002", "1e-19"] {
            let error = rate(slow).unwrap_err();
            assert!(error.contains("slower than one call an hour"), "{slow}: {error}");
        }
        for wrong in ["-1", "NaN", "inf", "fast"] {
            assert!(rate(wrong).unwrap_err().contains("not a positive number"), "{wrong}");
        }
    }

    /// Like every yes/no setting (design §10): clap's own `bool` takes only `true` and `false`.
    #[test]
    fn verifying_the_brokers_host_name_takes_every_usual_spelling() {
        let verify = |value: &str| {
            Cli::try_parse_from(["relay", "--amqp-tls-verify-hostname", value])
                .map(|cli| cli.broker.amqp_tls_verify_hostname)
        };
        for (value, expected) in [("no", false), ("0", false), ("OFF", false), ("yes", true), ("1", true)] {
            assert_eq!(verify(value).map_err(|e| e.to_string()), Ok(expected), "{value}");
        }
        assert!(verify("maybe").is_err());
        assert!(Cli::try_parse_from(["relay"]).unwrap().broker.amqp_tls_verify_hostname, "on by default");
    }
}
