//! A local stand-in for PolyAI's APIs (like stripe-mock): Conversations v3 list, by-id and
//! audio, the agents detail route, webhook endpoint management, fault injection, and signed
//! webhooks about its own conversations. Both host families are served on one port.
//!
//! In process: `MockApi::start(MockConfig::default(), listener, shutdown)`; from a shell:
//! `polyai-relay mock-api`.

mod audio;
mod auth;
pub mod config;
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
mod wav;
mod webhook_endpoints;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    middleware::{from_fn, from_fn_with_state},
    routing::get,
    Router,
};
use time::OffsetDateTime;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use config::{EmitConfig, EmitScheme, Faults, MockConfig, DEFAULT_ACCOUNT_ID, DEFAULT_API_KEY, DEFAULT_PROJECT_ID};
pub use emit::EmitSummary;
pub use generate::{Conversation, Turn};

use crate::config::ConfigError;
use state::MockState;

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

/// A mock serving on a socket until its shutdown token is cancelled.
pub struct RunningMock {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Resolves once the server has stopped after the shutdown token was cancelled.
    pub stopped: JoinHandle<std::io::Result<()>>,
    /// With `MockConfig::emit`: resolves once every webhook was sent (or shutdown came first).
    pub emitted: Option<JoinHandle<EmitSummary>>,
    state: Arc<MockState>,
}

impl MockApi {
    /// Checks the settings and generates the conversations.
    pub fn new(config: MockConfig) -> Result<Self, MockError> {
        config.validate()?;
        let now = OffsetDateTime::now_utc();
        // Whole seconds, as the API shows them; a cursor keys on them too.
        let window_end = config.window_end.unwrap_or(now).replace_nanosecond(0).unwrap_or(now);
        let conversations = generate::conversations(&generate::Plan {
            seed: config.seed,
            count: config.conversations,
            window: config.window,
            window_end,
            account_id: &config.account_id,
            project_id: &config.project_id,
        });
        Ok(Self { state: Arc::new(MockState::new(config, conversations)) })
    }

    /// Every generated conversation, newest first (the list endpoint's order).
    pub fn conversations(&self) -> &[Conversation] {
        &self.state.conversations
    }

    /// The whole API as a router, to serve on a listener of the caller's own.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown`, and starts emitting webhooks if configured.
    pub fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<RunningMock, MockError> {
        let local_addr = listener.local_addr().map_err(MockError::Listener)?;
        let emitter =
            self.state.config.emit.clone().map(emit::Emitter::new).transpose().map_err(MockError::EmitClient)?;
        let router = self.router();
        let server_shutdown = shutdown.clone();
        let stopped = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(server_shutdown.cancelled_owned()).await
        });
        let config = &self.state.config;
        tracing::info!(
            %local_addr,
            conversations = self.state.conversations.len(),
            seed = config.seed,
            account_id = config.account_id,
            project_id = config.project_id,
            "listening"
        );
        // Only now: a receiver that fetches the conversation at once must find the mock up.
        let emitted = emitter.map(|emitter| tokio::spawn(emitter.run(self.state.conversations.clone(), shutdown)));
        Ok(RunningMock { local_addr, stopped, emitted, state: self.state })
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

    /// Every generated conversation, newest first.
    pub fn conversations(&self) -> &[Conversation] {
        &self.state.conversations
    }
}

fn router(state: Arc<MockState>) -> Router {
    // Layers run outside in: latency, then the key, then injected faults, then the handler,
    // so a refused key is never masked by a 429 and every answer is late by the same amount.
    let v3 = Router::new()
        .route("/v3/{account}/{project}/conversations", get(conversations::list))
        .route("/v3/{account}/{project}/conversations/{id}", get(conversations::by_id))
        .route("/v3/{account}/{project}/conversations/{id}/audio", get(audio::v3))
        .route_layer(from_fn_with_state(state.clone(), faults::inject))
        .route_layer(from_fn_with_state(state.clone(), auth::api_key));
    let agents = Router::new()
        .route("/v1/agents/{agent}/conversations/{id}", get(conversations::detail))
        .route("/v1/agents/{agent}/conversations/{id}/audio", get(audio::agents))
        .route_layer(from_fn_with_state(state.clone(), faults::inject))
        .route_layer(from_fn_with_state(state.clone(), auth::platform_key));
    let endpoints = webhook_endpoints::router().route_layer(from_fn_with_state(state.clone(), auth::platform_key));
    Router::new()
        .merge(v3)
        .merge(agents)
        .merge(endpoints)
        .route_layer(from_fn_with_state(state.clone(), faults::latency))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn(error::correlate))
        .with_state(state)
}
