//! The default of every setting, written once: clap shows and applies these texts, and the
//! constructors below (for the demo, benchmarks and tests) read the same texts, so the two
//! can never disagree.

use secrecy::SecretString;

use super::{
    values, ApiSettings, BaseUrl, ConversationApi, EventTypes, Forwarding, ProjectName, ReceiverProject,
    ReceiverSettings, SignatureSettings, Topology, WorkerSettings,
};
use crate::signature::{SecretSlot, SignatureScheme};

pub const EVENTS_EXCHANGE: &str = "polyai.events";
pub const ENRICH_QUEUE: &str = "polyai.enrich";
pub const CONVERSATIONS_EXCHANGE: &str = "polyai.conversations";
pub const CONVERSATIONS_QUEUE: &str = "polyai.conversations";
pub const DEAD_EXCHANGE: &str = "polyai.dead";
pub const DEAD_QUEUE: &str = "polyai.dead";
pub const EVENTS: &str = "conversation.completed,handoff.created";
pub const DELIVERY_LIMIT: u32 = 20;
pub const CONVERSATIONS_LOG: &str = "polyai.conversations.log";
pub const LOG_RETENTION: &str = "7d";
/// RabbitMQ 4.x's `max_message_size` (3.x's is 128 MiB).
pub const BROKER_MAX_MESSAGE: &str = "16MiB";

pub const LISTEN: &str = "0.0.0.0:8080";
pub const PATH: &str = "/polyai-events";
pub const TIMESTAMP_TOLERANCE: &str = "300s";
pub const ACK_DEADLINE: &str = "3s";
pub const MAX_BODY: &str = "1MiB";
pub const BODY_MEMORY: &str = "32MiB";
pub const REQUEST_TIMEOUT: &str = "10s";
pub const MAX_IN_FLIGHT: usize = 1024;

pub const API_TIMEOUT: &str = "10s";
pub const API_MAX_RESPONSE: &str = "16MiB";
pub const API_CONCURRENCY: usize = 16;
pub const MAX_ATTEMPTS: u32 = 8;
pub const RETRY_BASE_DELAY: &str = "2s";
pub const RETRY_MAX_DELAY: &str = "10m";
pub const AUTH_PROBE_INTERVAL: &str = "30s";

/// [`BROKER_MAX_MESSAGE`] in bytes, for broker settings built without flags.
pub fn broker_max_message() -> usize {
    values::parse_size(BROKER_MAX_MESSAGE).expect("the default size parses")
}

fn duration(text: &str) -> std::time::Duration {
    values::parse_duration(text).expect("a default duration parses")
}

impl Default for Topology {
    /// The production names of design §4, the default event types and delivery limit.
    fn default() -> Self {
        Self::named("")
    }
}

impl Topology {
    /// The default names under `prefix` (`{prefix}.polyai.events`, …), so several relays or
    /// tests can share a broker without meeting; an empty prefix gives the production names.
    pub fn named(prefix: &str) -> Self {
        let name = |default: &str| if prefix.is_empty() { default.to_owned() } else { format!("{prefix}.{default}") };
        Self {
            events_exchange: name(EVENTS_EXCHANGE),
            enrich_queue: name(ENRICH_QUEUE),
            conversations_exchange: name(CONVERSATIONS_EXCHANGE),
            conversations_queue: Some(name(CONVERSATIONS_QUEUE)),
            dead_exchange: name(DEAD_EXCHANGE),
            dead_queue: name(DEAD_QUEUE),
            event_types: EventTypes::Only(values::parse_list(EVENTS)),
            delivery_limit: DELIVERY_LIMIT,
            conversations_log: Some(name(CONVERSATIONS_LOG)),
            log_retention: duration(LOG_RETENTION),
        }
    }
}

impl ReceiverSettings {
    /// A receiver of one project with the default settings, verifying with `secret` alone.
    pub fn new(secret: SecretString) -> Self {
        Self {
            listen: LISTEN.parse().expect("the default address parses"),
            projects: vec![ReceiverProject {
                name: ProjectName::default(),
                path: PATH.to_owned(),
                signature: SignatureSettings {
                    secrets: vec![(SecretSlot::Current, secret)],
                    scheme: SignatureScheme::Auto,
                    tolerance: duration(TIMESTAMP_TOLERANCE),
                },
                forwarding: Forwarding {
                    event_types: EventTypes::Only(values::parse_list(EVENTS)),
                    environments: None,
                },
            }],
            ack_deadline: duration(ACK_DEADLINE),
            max_body: values::parse_size(MAX_BODY).expect("the default size parses"),
            body_memory: values::parse_size(BODY_MEMORY).expect("the default size parses"),
            request_timeout: duration(REQUEST_TIMEOUT),
            max_in_flight: MAX_IN_FLIGHT,
        }
    }
}

impl ApiSettings {
    /// The v3 API at `base_url` with the default timeout and no platform host.
    pub fn new(base_url: BaseUrl, api_key: SecretString, account_id: &str, project_id: &str) -> Self {
        Self {
            project: ProjectName::default(),
            base_url,
            api_key,
            account_id: account_id.to_owned(),
            project_id: project_id.to_owned(),
            timeout: duration(API_TIMEOUT),
            conversation_api: ConversationApi::V3,
            platform: None,
            max_response: values::parse_size(API_MAX_RESPONSE).expect("the default size parses"),
        }
    }
}

impl WorkerSettings {
    /// A worker of the one project `api` with the default settings.
    pub fn new(api: ApiSettings) -> Self {
        Self {
            projects: vec![api],
            concurrency: API_CONCURRENCY,
            rate: None,
            max_attempts: MAX_ATTEMPTS,
            retry_base_delay: duration(RETRY_BASE_DELAY),
            retry_max_delay: duration(RETRY_MAX_DELAY),
            auth_probe_interval: duration(AUTH_PROBE_INTERVAL),
            audio: None,
            reconcile: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses() {
        let receiver = ReceiverSettings::new(SecretString::from("s"));
        assert_eq!(receiver.ack_deadline, std::time::Duration::from_secs(3));
        assert_eq!(receiver.max_body, 1 << 20);
        let api = ApiSettings::new("http://127.0.0.1:1".parse().unwrap(), SecretString::from("k"), "a", "p");
        assert_eq!(WorkerSettings::new(api).retry_max_delay, std::time::Duration::from_secs(600));
        assert_eq!(Topology::default().enrich_queue, "polyai.enrich");
        assert_eq!(Topology::named("t").dead_queue, "t.polyai.dead");
    }
}
