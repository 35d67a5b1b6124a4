//! Typed settings from flags and environment variables, validated once at start-up.
//!
//! clap parses the raw values (`args`); `*Args::settings()` turns them into the settings the
//! rest of the program uses, failing with one line that names the variable at fault.

pub mod amqp;
mod api_args;
mod args;
mod base_url;
pub mod broker_limit;
pub mod defaults;
mod forwarding;
pub mod hosts;
mod project;
mod project_api;
mod project_choice;
mod projects_file;
mod receiver_args;
mod reconcile_args;
pub mod secret;
mod server_args;
mod spool_args;
mod values;

pub use amqp::{AmqpTarget, TlsSettings};
pub use api_args::{ApiArgs, AudioArgs, AudioDirection, ConversationApi, PlatformArgs};
pub use args::{forwarded, BrokerArgs, LogArgs, LogFormat, TopologyArgs, WorkerArgs};
pub use base_url::BaseUrl;
pub use forwarding::{Forwarding, Ignored};
pub use hosts::Region;
pub use project::{ProjectName, DEFAULT_PROJECT, UNKNOWN_PROJECT};
pub use project_choice::{Chosen, ProjectChoice};
pub use projects_file::{refuse_beside_file, ProjectEntry, ProjectsArgs, ProjectsFile};
pub use receiver_args::ReceiverArgs;
pub use reconcile_args::{
    check_ledger_kept, check_within_retention, left_out, nothing_forwarded, LeftOut, ReconcileArgs, ReconcileSettings,
    LEAVES_ALONE,
};
pub use secret::secret_value;
pub use server_args::{ConnectionLimits, ServerArgs, ServerSettings};
pub use spool_args::{SpoolArgs, SpoolSettings};
pub use values::{parse_bool, parse_duration, parse_list, parse_size};

use std::{net::SocketAddr, time::Duration};

use secrecy::SecretString;

use crate::signature::{SecretSlot, SignatureScheme};

/// A setting that cannot be used. The message names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// `variable` is the one at fault; messages name it, so constructors take it to keep that so.
    pub fn new(_variable: &str, message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// Which event types travel through the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypes {
    /// `*`: everything PolyAI sends.
    All,
    /// Only these types; others are answered 204 and dropped.
    Only(Vec<String>),
}

impl EventTypes {
    pub fn forwards(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(types) => types.iter().any(|t| t == event_type),
        }
    }

    /// Binding keys for the topic exchange: `#` for all, else each type verbatim.
    pub fn binding_keys(&self) -> Vec<String> {
        match self {
            Self::All => vec!["#".to_owned()],
            Self::Only(types) => types.clone(),
        }
    }
}

/// Names of the exchanges and queues (design §4), all settings so several relays can share a broker.
#[derive(Debug, Clone)]
pub struct Topology {
    pub events_exchange: String,
    pub enrich_queue: String,
    pub conversations_exchange: String,
    /// `None` when the ready-made downstream queue is turned off.
    pub conversations_queue: Option<String>,
    pub dead_exchange: String,
    pub dead_queue: String,
    pub event_types: EventTypes,
    /// Backstop against a crash loop on one message: the broker dead-letters after this many deliveries.
    pub delivery_limit: u32,
    /// The stream that records every raw event and record (the ledger reconciliation reads);
    /// `None` when turned off.
    pub conversations_log: Option<String>,
    /// How long the stream keeps what it records (`x-max-age`), and the embedded ledger too.
    pub log_retention: Duration,
}

impl Topology {
    /// The names of the delay queues used for retries; see [`crate::queue::retry_tier`].
    pub fn retry_queue(&self, tier: Duration) -> String {
        format!("{}.retry.{}", self.enrich_queue, humantime::format_duration(tier))
    }
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// RabbitMQ's addresses (`AMQP_URL`) and TLS; `None`: no broker, the embedded queue.
    pub amqp_url: Option<AmqpTarget>,
    /// The embedded queue's directory.
    pub data_dir: std::path::PathBuf,
    pub topology: Topology,
}

#[derive(Debug, Clone)]
pub struct SignatureSettings {
    pub secrets: Vec<(SecretSlot, SecretString)>,
    pub scheme: SignatureScheme,
    pub tolerance: Duration,
}

/// What the receiver knows of one project (design §12): where PolyAI posts its events, how they
/// are signed, and which of them travel on.
#[derive(Debug, Clone)]
pub struct ReceiverProject {
    pub name: ProjectName,
    /// The webhook path; one per project, so the path alone picks the secrets to verify with.
    pub path: String,
    pub signature: SignatureSettings,
    /// What its webhooks travel on; the others are answered 204 and dropped.
    pub forwarding: Forwarding,
}

#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    pub listen: SocketAddr,
    /// Never empty; paths are unique.
    pub projects: Vec<ReceiverProject>,
    pub ack_deadline: Duration,
    pub max_body: usize,
    /// What the bodies being read may hold together beyond each one's first 16 KiB: clients
    /// without the secret cannot make the relay hold more while it waits to check them.
    pub body_memory: usize,
    /// Longest a client may take to send a whole request (slowloris guard).
    pub request_timeout: Duration,
    /// Requests handled at once; more are shed with 503 instead of queueing without bound.
    pub max_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Which of the relay's projects this key and these ids belong to (design §12).
    pub project: ProjectName,
    pub base_url: BaseUrl,
    pub api_key: SecretString,
    pub account_id: String,
    pub project_id: String,
    pub timeout: Duration,
    /// Which path fetches one conversation.
    pub conversation_api: ConversationApi,
    /// The Webhooks/Agents host and key, when configured (needed by `agents`).
    pub platform: Option<PlatformSettings>,
    /// Bytes of one API answer at most; more is a permanent error for the event.
    pub max_response: usize,
}

/// The build/monitor host family (`api.{us,uk,eu}.poly.ai`) and its workspace-scoped key.
#[derive(Debug, Clone)]
pub struct PlatformSettings {
    pub url: BaseUrl,
    pub api_key: SecretString,
    pub timeout: Duration,
}

/// Recording downloads of the worker.
#[derive(Debug, Clone)]
pub struct AudioSettings {
    pub dir: std::path::PathBuf,
    pub direction: AudioDirection,
    pub redacted: bool,
    /// Bytes of one recording at most; more is a permanent error for the event.
    pub max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The projects the worker fetches for, each with its own key, ids and host (design §12).
    /// Never empty; the first is the one an event without `x-relay-project` belongs to.
    pub projects: Vec<ApiSettings>,
    pub concurrency: usize,
    /// Requests per second of each project (its key has its own quota); `None` for unlimited.
    pub rate: Option<f64>,
    pub max_attempts: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// How often a project paused by a 401/403 asks the API whether its key works again, and how
    /// long its events wait in a delay queue between two looks.
    pub auth_probe_interval: Duration,
    /// `Some` when recordings are saved.
    pub audio: Option<AudioSettings>,
    /// `Some` when the worker reconciles continuously.
    pub reconcile: Option<ReconcileSettings>,
}
