//! What a mock serves and how it misbehaves: plain structs with defaults, so the `demo` command
//! and tests can build one in a line and change only what they care about.

use std::time::Duration;

use polyai_relay::config::ConfigError;
use secrecy::SecretString;
use time::OffsetDateTime;
use url::Url;

use super::tenant::Tenant;

/// The key the mock accepts when none is configured; printed in `--help`, so never a real one.
pub const DEFAULT_API_KEY: &str = "mock-api-key";
pub const DEFAULT_ACCOUNT_ID: &str = "ws-mock";
pub const DEFAULT_PROJECT_ID: &str = "PROJECT-MOCK";
/// A fixed default seed, so two runs without flags serve the same conversations.
pub const DEFAULT_SEED: u64 = 42;
/// The name of the tenant that the top-level `MockConfig` fields describe, for `MockControl`
/// and the `/_mock/tenants/{name}` routes: the relay's name for its one project, so the two
/// sides of a demo agree.
pub const PRIMARY_TENANT: &str = polyai_relay::config::DEFAULT_PROJECT;

#[derive(Debug, Clone)]
pub struct MockConfig {
    /// `x-api-key` of the primary tenant's Conversations v3 routes (`/v3/...`).
    pub api_key: SecretString,
    /// `x-api-key` of the `/v1/...` routes (webhook endpoints, agents); PolyAI issues this
    /// workspace-scoped key apart from the v3 key. `None`: the same key as `api_key`.
    pub platform_api_key: Option<SecretString>,
    /// The primary tenant's account (`ws-…`); an account no tenant has answers 404 `PROJECT_NOT_FOUND`.
    pub account_id: String,
    /// The primary tenant's project (= agent id of `/v1/agents/{agentId}`).
    pub project_id: String,
    /// Same seed, same conversations (ids, channels, turns, times relative to `window_end`).
    /// Other tenants mix their account and project into it, so no two tenants share an id.
    pub seed: u64,
    /// How many conversations to generate, per tenant.
    pub conversations: usize,
    /// Conversations start within this long before `window_end`.
    pub window: Duration,
    /// End of the generated window; `None`: start-up time. Fix it for byte-identical data across runs.
    pub window_end: Option<OffsetDateTime>,
    /// The primary tenant's faults at start, and every other tenant's unless it has its own.
    /// Its latency also delays refusals made before a tenant is known (an unknown key).
    pub faults: Faults,
    /// `Some`: POST signed webhooks about the primary tenant's conversations once listening.
    pub emit: Option<EmitConfig>,
    /// More accounts and projects served beside the one above, each with its own keys,
    /// conversations and faults: one mock for a relay that serves several projects.
    pub tenants: Vec<Tenant>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            api_key: SecretString::from(DEFAULT_API_KEY),
            platform_api_key: None,
            account_id: DEFAULT_ACCOUNT_ID.to_owned(),
            project_id: DEFAULT_PROJECT_ID.to_owned(),
            seed: DEFAULT_SEED,
            conversations: 200,
            window: Duration::from_secs(24 * 3600),
            window_end: None,
            faults: Faults::default(),
            emit: None,
            tenants: Vec::new(),
        }
    }
}

/// Fault injection on the conversation and audio routes, to exercise a client's retry table.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Added before every API answer (webhook endpoints included), errors too.
    pub latency: Duration,
    /// Fraction (0..=1) of conversation/audio requests answered 429 with `Retry-After`.
    pub rate_429: f64,
    /// The `Retry-After` of those 429s, sent as whole seconds (rounded up).
    pub retry_after: Duration,
    /// Fraction (0..=1) of conversation/audio requests answered 503.
    pub rate_5xx: f64,
    /// The first N by-id requests (detail or audio) of each conversation answer 404, as if it
    /// were not ingested yet; 0 turns this off.
    pub not_found_until: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            rate_429: 0.0,
            retry_after: Duration::from_secs(1),
            rate_5xx: 0.0,
            not_found_until: 0,
        }
    }
}

/// Signed webhooks the mock sends, the way PolyAI delivers them.
#[derive(Debug, Clone)]
pub struct EmitConfig {
    /// The receiver, e.g. `http://127.0.0.1:8080/polyai-events`.
    pub url: Url,
    /// Events per second.
    pub rate: f64,
    /// Events in all; `None`: one pass over the finished conversations. More than one pass
    /// repeats conversations under new event ids.
    pub count: Option<usize>,
    /// The endpoint's signing secret (the receiver's `POLYAI_WEBHOOK_SECRET`).
    pub secret: SecretString,
    pub scheme: EmitScheme,
}

/// Which signed message the emitter sends: the sender's choice, shared.
pub use crate::sender::SendScheme as EmitScheme;

impl MockConfig {
    /// The key of the `/v1/...` routes.
    pub fn platform_key(&self) -> &SecretString {
        self.platform_api_key.as_ref().unwrap_or(&self.api_key)
    }

    /// The tenant the top-level fields describe, named [`PRIMARY_TENANT`].
    pub fn primary_tenant(&self) -> Tenant {
        Tenant {
            name: PRIMARY_TENANT.to_owned(),
            account_id: self.account_id.clone(),
            project_id: self.project_id.clone(),
            api_key: self.api_key.clone(),
            platform_api_key: self.platform_api_key.clone(),
            faults: Some(self.faults.clone()),
            emit: self.emit.clone(),
        }
    }

    /// Every tenant served, the primary one first.
    pub fn all_tenants(&self) -> Vec<Tenant> {
        std::iter::once(self.primary_tenant()).chain(self.tenants.iter().cloned()).collect()
    }

    /// Refuses settings the mock cannot honour; errors name the variable of the `mock-api` command.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(field) = self.faults.check() {
            let variable = match field {
                "rate_429" => "MOCK_API_RATE_429",
                _ => "MOCK_API_RATE_5XX",
            };
            return Err(ConfigError::new(variable, format!("{variable} must be a fraction from 0 to 1")));
        }
        if self.window.as_secs() == 0 {
            return Err(ConfigError::new("MOCK_API_WINDOW", "MOCK_API_WINDOW must be at least 1s"));
        }
        for (variable, id) in [("POLYAI_ACCOUNT_ID", &self.account_id), ("POLYAI_PROJECT_ID", &self.project_id)] {
            if !super::tenant::valid_id(id) {
                return Err(ConfigError::new(
                    variable,
                    format!("{variable} may hold only letters, digits, `-`, `_` and `.`"),
                ));
            }
        }
        if let Some(emit) = &self.emit {
            emit.validate()?;
        }
        super::tenant::validate(self)
    }
}

impl Faults {
    /// `Err(field)` names the rate that is not a fraction from 0 to 1.
    pub fn check(&self) -> Result<(), &'static str> {
        for (field, rate) in [("rate_429", self.rate_429), ("rate_5xx", self.rate_5xx)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(field);
            }
        }
        Ok(())
    }
}

impl EmitConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return Err(ConfigError::new("MOCK_API_EMIT_RATE", "MOCK_API_EMIT_RATE must be above zero"));
        }
        if self.count == Some(0) {
            return Err(ConfigError::new("MOCK_API_EMIT_COUNT", "MOCK_API_EMIT_COUNT must be at least 1"));
        }
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(ConfigError::new("MOCK_API_EMIT_TO", "MOCK_API_EMIT_TO must be an http(s) URL"));
        }
        Ok(())
    }
}
