//! A local stand-in for PolyAI's APIs (like stripe-mock): Conversations v3 list, by-id and
//! audio, the agents detail route, webhook endpoint management, fault injection, and signed
//! webhooks about its own conversations. Both host families are served on one port, for one
//! account and project or several (tenants), each with its own keys and conversations.
//!
//! In process: `MockApi::start(MockConfig::default(), listener, shutdown)`; from a shell:
//! `polyai-relay mock-api`.

mod admin;
mod audio;
mod auth;
pub mod config;
mod control;
mod conversations;
mod cursor;
pub mod emit;
mod endpoints;
mod error;
mod faults;
pub mod generate;
mod list_query;
mod prng;
mod script;
mod state;
mod tenant;
mod tenant_spec;
mod tenant_state;
mod wav;
mod webhook_endpoints;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    middleware::{from_fn, from_fn_with_state},
    routing::get,
    Router,
};
use polyai_relay::config::ConfigError;
use time::OffsetDateTime;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{
    EmitConfig, EmitScheme, Faults, MockConfig, DEFAULT_ACCOUNT_ID, DEFAULT_API_KEY, DEFAULT_PROJECT_ID, PRIMARY_TENANT,
};
pub use control::{ControlError, MockControl, TenantStatus};
pub use emit::EmitSummary;
pub use generate::{Conversation, Turn};
pub use tenant::Tenant;
pub use tenant_spec::{parse_tenants, EmitPace};

use endpoints::Endpoints;
use state::MockState;
use tenant_state::TenantState;

#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("cannot build the HTTP client that emits webhooks: {0}")]
    EmitClient(reqwest::Error),
}

/// A configured mock with its conversations generated, ready to serve.
pub struct MockApi {
    state: Arc<MockState>,
}

/// A mock serving on a socket until its shutdown token is cancelled. Derefs to the [`MockApi`]
/// it serves, for its conversations and its controls.
pub struct RunningMock {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Resolves once the server has stopped after the shutdown token was cancelled.
    pub stopped: JoinHandle<std::io::Result<()>>,
    /// With `MockConfig::emit`: resolves once every webhook was sent (or shutdown came first).
    pub emitted: Option<JoinHandle<EmitSummary>>,
    /// The same for each other tenant with `Tenant::emit`, by tenant name.
    pub emitted_by_tenant: BTreeMap<String, JoinHandle<EmitSummary>>,
    mock: MockApi,
}

impl MockApi {
    /// Checks the settings and generates each tenant's conversations.
    pub fn new(config: MockConfig) -> Result<Self, MockError> {
        config.validate()?;
        let now = OffsetDateTime::now_utc();
        // Whole seconds, as the API shows them; a cursor keys on them too.
        let window_end = config.window_end.unwrap_or(now).replace_nanosecond(0).unwrap_or(now);
        let mut accounts: BTreeMap<String, Arc<Mutex<Endpoints>>> = BTreeMap::new();
        let tenants = config
            .all_tenants()
            .iter()
            .enumerate()
            .map(|(position, tenant)| {
                // The primary tenant keeps the plain seed: one-tenant mocks serve what they always did.
                let seed = match position {
                    0 => config.seed,
                    _ => generate::tenant_seed(config.seed, &tenant.account_id, &tenant.project_id),
                };
                let conversations = generate::conversations(&generate::Plan {
                    seed,
                    count: config.conversations,
                    window: config.window,
                    window_end,
                    account_id: &tenant.account_id,
                    project_id: &tenant.project_id,
                });
                let endpoints = accounts.entry(tenant.account_id.clone()).or_default().clone();
                Arc::new(TenantState::new(tenant, &config.faults, conversations, endpoints))
            })
            .collect();
        Ok(Self { state: Arc::new(MockState::new(config, tenants)) })
    }

    /// The primary tenant's conversations, newest first (the list endpoint's order).
    pub fn conversations(&self) -> &[Conversation] {
        &self.state.primary().conversations
    }

    /// A tenant's conversations, newest first; `None` for a name no tenant has.
    pub fn conversations_of(&self, tenant: &str) -> Option<&[Conversation]> {
        self.state.tenant(tenant).map(|t| &*t.conversations)
    }

    /// Revoke and restore keys, change faults, tenant by tenant, while serving.
    pub fn control(&self) -> MockControl {
        MockControl::new(self.state.clone())
    }

    /// The whole API as a router, to serve on a listener of the caller's own.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown`, and starts emitting webhooks if configured.
    pub fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<RunningMock, MockError> {
        let local_addr = listener.local_addr().map_err(MockError::Listener)?;
        // Built before serving, so a bad client setup fails start-up.
        let mut emitters = Vec::new();
        for (tenant, state) in self.state.config.all_tenants().into_iter().zip(&self.state.tenants) {
            if let Some(emit) = tenant.emit {
                let emitter = emit::Emitter::new(emit).map_err(MockError::EmitClient)?;
                emitters.push((state.clone(), emitter));
            }
        }
        let router = self.router();
        let server_shutdown = shutdown.clone();
        let stopped = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(server_shutdown.cancelled_owned()).await
        });
        for tenant in &self.state.tenants {
            // Names and ids only: keys never reach the logs.
            tracing::info!(
                tenant = tenant.name,
                account_id = tenant.account_id,
                project_id = tenant.project_id,
                conversations = tenant.conversations.len(),
                "serving tenant"
            );
        }
        tracing::info!(%local_addr, tenants = self.state.tenants.len(), seed = self.state.config.seed, "listening");
        // Only now: a receiver that fetches the conversation at once must find the mock up.
        let (mut emitted, mut emitted_by_tenant) = (None, BTreeMap::new());
        for (tenant, emitter) in emitters {
            let span = tracing::info_span!("emit", tenant = tenant.name);
            let handle = tokio::spawn(emitter.run(tenant.conversations.clone(), shutdown.clone()).instrument(span));
            if Arc::ptr_eq(&tenant, self.state.primary()) {
                emitted = Some(handle);
            } else {
                emitted_by_tenant.insert(tenant.name.clone(), handle);
            }
        }
        Ok(RunningMock { local_addr, stopped, emitted, emitted_by_tenant, mock: self })
    }

    /// `new` then `serve`.
    pub async fn start(
        config: MockConfig,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<RunningMock, MockError> {
        Self::new(config)?.serve(listener, shutdown)
    }

    /// `new`, bind `address` (port 0 picks one), then `serve`.
    pub async fn bind(
        config: MockConfig,
        address: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<RunningMock, MockError> {
        let mock = Self::new(config)?;
        let listener = TcpListener::bind(address).await.map_err(|source| MockError::Listen { address, source })?;
        mock.serve(listener, shutdown)
    }
}

impl RunningMock {
    /// `http://{local_addr}`: the base URL of both host families (`POLYAI_BASE_URL`, `POLYAI_PLATFORM_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }
}

impl std::ops::Deref for RunningMock {
    type Target = MockApi;

    fn deref(&self) -> &MockApi {
        &self.mock
    }
}

fn router(state: Arc<MockState>) -> Router {
    // `auth` finds the tenant from the key and path, then applies its latency and faults, so a
    // refused key is never masked by a 429 and every answer is late by the same amount.
    let v3 = Router::new()
        .route("/v3/{account}/{project}/conversations", get(conversations::list))
        .route("/v3/{account}/{project}/conversations/{id}", get(conversations::by_id))
        .route("/v3/{account}/{project}/conversations/{id}/audio", get(audio::v3))
        .route_layer(from_fn_with_state(state.clone(), auth::v3));
    let agents = Router::new()
        .route("/v1/agents/{agent}/conversations/{id}", get(conversations::detail))
        .route("/v1/agents/{agent}/conversations/{id}/audio", get(audio::agents))
        .route_layer(from_fn_with_state(state.clone(), auth::agents));
    let endpoints = webhook_endpoints::router().route_layer(from_fn_with_state(state.clone(), auth::account));
    Router::new()
        .merge(v3)
        .merge(agents)
        .merge(endpoints)
        .merge(admin::router())
        .route("/healthz", get(|| async { "ok" }))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn(error::correlate))
        .with_state(state)
}
