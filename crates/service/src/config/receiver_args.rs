//! The receiver's flags, and the projects it verifies: from `RELAY_PROJECTS_FILE`, or the one the
//! environment describes.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{
    builder::{PossibleValuesParser, TypedValueParser},
    Args,
};
use secrecy::SecretString;

use super::{
    args::{duration, size},
    defaults,
    secret::{self, secret_value},
    values, ConfigError, Forwarding, ProjectEntry, ProjectName, ProjectsFile, ReceiverProject, ReceiverSettings,
    SignatureSettings,
};
use crate::{
    receiver,
    signature::{SecretSlot, SignatureScheme},
};

fn signature_scheme() -> impl TypedValueParser<Value = SignatureScheme> {
    PossibleValuesParser::new(["auto", "timestamped", "body"]).map(|name| match name.as_str() {
        "timestamped" => SignatureScheme::Timestamped,
        "body" => SignatureScheme::Body,
        _ => SignatureScheme::Auto,
    })
}

#[derive(Debug, Clone, Args)]
pub struct ReceiverArgs {
    /// Signing secret of the webhook endpoint (one project; RELAY_PROJECTS_FILE names one per project).
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET", value_parser = secret_value, hide_env_values = true)]
    pub webhook_secret: Option<SecretString>,
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// A second secret accepted too, so a rotation needs no downtime.
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET_PREVIOUS", value_parser = secret_value, hide_env_values = true)]
    pub webhook_secret_previous: Option<SecretString>,
    #[arg(long, env = "POLYAI_WEBHOOK_SECRET_PREVIOUS_FILE")]
    pub webhook_secret_previous_file: Option<PathBuf>,
    /// Address the receiver listens on (port 0 picks a free port).
    #[arg(long, env = "RELAY_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Path PolyAI posts to [default: /polyai-events] (one project; the projects file gives each its own).
    #[arg(long, env = "RELAY_PATH")]
    pub path: Option<String>,
    /// Which signed message to check: `auto` accepts both forms the docs describe, `timestamped`
    /// checks `{timestamp}.{body}` and its freshness, `body` the body alone.
    #[arg(long, env = "RELAY_SIGNATURE_SCHEME", default_value = "auto", value_parser = signature_scheme())]
    pub signature_scheme: SignatureScheme,
    /// How far X-PolyAI-Timestamp may be from now, either way.
    #[arg(long, env = "RELAY_TIMESTAMP_TOLERANCE", default_value = defaults::TIMESTAMP_TOLERANCE, value_parser = duration("RELAY_TIMESTAMP_TOLERANCE"))]
    pub timestamp_tolerance: Duration,
    /// Longest a request waits for a durable enqueue before answering 503.
    #[arg(long, env = "RELAY_ACK_DEADLINE", default_value = defaults::ACK_DEADLINE, value_parser = duration("RELAY_ACK_DEADLINE"))]
    pub ack_deadline: Duration,
    /// Larger bodies get 413 without being buffered.
    #[arg(long, env = "RELAY_MAX_BODY", default_value = defaults::MAX_BODY, value_parser = size("RELAY_MAX_BODY"))]
    pub max_body: usize,
    /// What all bodies being read may hold together beyond each one's first 16 KiB; a body that
    /// finds it spent gets 503 at once.
    #[arg(long, env = "RELAY_BODY_MEMORY", default_value = defaults::BODY_MEMORY, value_parser = size("RELAY_BODY_MEMORY"))]
    pub body_memory: usize,
    /// Longest a client may take to send a request (guards against slow senders holding connections).
    #[arg(long, env = "RELAY_REQUEST_TIMEOUT", default_value = defaults::REQUEST_TIMEOUT, value_parser = duration("RELAY_REQUEST_TIMEOUT"))]
    pub request_timeout: Duration,
    /// Signed requests being stored at once (taken once the body is in and verified); past this
    /// the receiver answers 503 at once.
    #[arg(long, env = "RELAY_MAX_IN_FLIGHT", default_value_t = defaults::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
}

impl ReceiverArgs {
    /// `forwarding` is `RELAY_EVENTS` and `RELAY_ENVIRONMENTS`: what a project forwards unless
    /// it says otherwise.
    pub fn settings(
        &self,
        file: Option<&ProjectsFile>,
        forwarding: &Forwarding,
    ) -> Result<ReceiverSettings, ConfigError> {
        if self.ack_deadline.is_zero() {
            return Err(ConfigError::new("RELAY_ACK_DEADLINE", "RELAY_ACK_DEADLINE must be above zero"));
        }
        if self.body_memory.saturating_add(receiver::FREE_BODY_BYTES) < self.max_body {
            return Err(ConfigError::new(
                "RELAY_BODY_MEMORY",
                format!(
                    "RELAY_BODY_MEMORY ({} bytes) plus a body's first 16KiB must hold a body of RELAY_MAX_BODY ({} bytes), or the largest events could never be read",
                    self.body_memory, self.max_body
                ),
            ));
        }
        let projects = match file {
            None => vec![self.env_project(forwarding)?],
            Some(file) => {
                self.refuse_env_project()?;
                let projects: Vec<_> =
                    file.projects.iter().map(|entry| self.file_project(entry, forwarding)).collect::<Result<_, _>>()?;
                let held: Vec<_> = projects
                    .iter()
                    .map(|project: &ReceiverProject| {
                        (&project.name, project.signature.secrets.iter().map(|(_, secret)| secret).collect())
                    })
                    .collect();
                secret::refuse_shared(&held)?;
                projects
            }
        };
        Ok(ReceiverSettings {
            listen: self.listen,
            projects,
            ack_deadline: self.ack_deadline,
            max_body: self.max_body,
            body_memory: self.body_memory,
            request_timeout: self.request_timeout,
            max_in_flight: self.max_in_flight.max(1),
        })
    }

    fn signature(&self, secrets: Vec<(SecretSlot, SecretString)>) -> SignatureSettings {
        SignatureSettings { secrets, scheme: self.signature_scheme, tolerance: self.timestamp_tolerance }
    }

    /// The one project of a relay without a projects file.
    fn env_project(&self, forwarding: &Forwarding) -> Result<ReceiverProject, ConfigError> {
        let current = secret::require(
            "POLYAI_WEBHOOK_SECRET",
            self.webhook_secret.as_ref(),
            self.webhook_secret_file.as_deref(),
            "to verify webhooks",
        )?;
        let mut secrets = vec![(SecretSlot::Current, current)];
        if let Some(previous) = secret::resolve(
            "POLYAI_WEBHOOK_SECRET_PREVIOUS",
            self.webhook_secret_previous.as_ref(),
            self.webhook_secret_previous_file.as_deref(),
        )? {
            secrets.push((SecretSlot::Previous, previous));
        }
        let path = self.path.clone().unwrap_or_else(|| defaults::PATH.to_owned());
        if !values::plain_route(&path) {
            return Err(ConfigError::new(
                "RELAY_PATH",
                format!("RELAY_PATH `{path}` must be an absolute path of letters, digits and `/-_.~`"),
            ));
        }
        Ok(ReceiverProject {
            name: ProjectName::default(),
            path,
            signature: self.signature(secrets),
            forwarding: forwarding.clone(),
        })
    }

    fn file_project(&self, entry: &ProjectEntry, defaults: &Forwarding) -> Result<ReceiverProject, ConfigError> {
        let why = "to verify its webhooks";
        let current = entry.require_secret("webhook_secret_file", entry.webhook_secret_file.as_deref(), why)?;
        let mut secrets = vec![(SecretSlot::Current, current)];
        if let Some(path) = &entry.webhook_secret_previous_file {
            secrets
                .push((SecretSlot::Previous, entry.require_secret("webhook_secret_previous_file", Some(path), why)?));
        }
        Ok(ReceiverProject {
            name: entry.name.clone(),
            path: entry.path.clone(),
            signature: self.signature(secrets),
            forwarding: entry.forwarding(defaults),
        })
    }

    /// See [`super::projects_file::refuse_beside_file`].
    pub fn refuse_env_project(&self) -> Result<(), ConfigError> {
        let set = [
            ("POLYAI_WEBHOOK_SECRET", self.webhook_secret.is_some()),
            ("POLYAI_WEBHOOK_SECRET_FILE", self.webhook_secret_file.is_some()),
            ("POLYAI_WEBHOOK_SECRET_PREVIOUS", self.webhook_secret_previous.is_some()),
            ("POLYAI_WEBHOOK_SECRET_PREVIOUS_FILE", self.webhook_secret_previous_file.is_some()),
            ("RELAY_PATH", self.path.is_some()),
        ];
        super::projects_file::refuse_beside_file(&set)
    }
}
