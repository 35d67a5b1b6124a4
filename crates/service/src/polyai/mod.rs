//! Client of PolyAI's APIs: conversations (by id, list, audio) on the runtime host, and the
//! Agents and Webhooks APIs on the platform host.

mod advice;
mod asked_again;
mod audio;
mod capped;
mod clients;
mod endpoints;
mod errors;
mod list;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::{header::HeaderValue, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use self::{
    advice::{advice, advice_for, SettingNames},
    asked_again::KeyedCall,
    audio::AudioRequest,
    endpoints::{EndpointClient, NewEndpoint, RegisteredEndpoint},
    errors::{error_detail, listing_wait_after_429, parse_retry_after, redirect_detail, RETRY_AFTER_CAP},
    list::{ListPage, ListRequest, NextPage, Summary, Visited},
};
use crate::config::{ApiSettings, BaseUrl, ConversationApi, ProjectName};

/// Why a call failed, sorted by what the caller does about it (design §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("429 rate limited{}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("{status}: {detail}")]
    Server { status: u16, detail: String },
    #[error("404 not found: {detail}")]
    NotFound { detail: String },
    #[error("{status} the API key was refused: {detail}")]
    Unauthorized { status: u16, detail: String },
    #[error("{status}: {detail}")]
    Rejected { status: u16, detail: String },
    #[error("request failed: {0}")]
    Transport(String),
    /// An answer the relay will never be able to use (over a size cap, a file name the
    /// filesystem refuses): a permanent error for the event, not a retry.
    #[error("unusable answer: {detail}")]
    Unusable { detail: String },
}

impl ApiError {
    /// The API gave no answer of its own: a 5xx or 408 (a gateway's, most often, or a server
    /// failing), a timeout, no connection, or a 200 the worker cannot read (a maintenance page).
    pub fn is_unanswered(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Transport(_))
    }

    /// Label for the fetch metric.
    pub fn status_label(&self) -> String {
        match self {
            Self::RateLimited { .. } => "429".into(),
            Self::NotFound { .. } => "404".into(),
            Self::Server { status, .. } | Self::Unauthorized { status, .. } | Self::Rejected { status, .. } => {
                status.to_string()
            }
            Self::Transport(_) => "transport".into(),
            Self::Unusable { .. } => "unusable".into(),
        }
    }
}

/// A key as a header value marked sensitive, so neither `Debug` nor reqwest's logging prints it.
pub(crate) fn key_header(variable: &str, key: &SecretString) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::from_str(key.expose_secret())
        .map_err(|_| anyhow::anyhow!("{variable} holds characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Where conversations are read from: a host, its key, and the path prefix.
#[derive(Clone)]
struct Host {
    base: BaseUrl,
    key: HeaderValue,
}

/// The conversations client. Cheap to clone.
#[derive(Clone)]
pub struct PolyaiClient {
    /// The relay project these settings belong to (design §12), for what is published with them.
    project: ProjectName,
    /// JSON calls, each within `RELAY_API_TIMEOUT` whole.
    http: reqwest::Client,
    /// Recordings, bounded by progress rather than total time (see `clients::download_client`).
    downloads: reqwest::Client,
    runtime: Host,
    /// The Agents API host, when configured.
    platform: Option<Host>,
    account_id: String,
    project_id: String,
    conversation_api: ConversationApi,
    /// Bytes of one answer at most (`RELAY_API_MAX_RESPONSE`).
    max_response: usize,
}

impl std::fmt::Debug for PolyaiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolyaiClient").field("base_url", &self.runtime.base.as_str()).finish_non_exhaustive()
    }
}

impl PolyaiClient {
    pub fn new(settings: &ApiSettings) -> anyhow::Result<Self> {
        let platform = match &settings.platform {
            Some(p) => Some(Host { base: p.url.clone(), key: key_header("POLYAI_PLATFORM_API_KEY", &p.api_key)? }),
            None => None,
        };
        Ok(Self {
            project: settings.project.clone(),
            http: clients::api_client(settings.timeout)?,
            downloads: clients::download_client(settings.timeout)?,
            runtime: Host { base: settings.base_url.clone(), key: key_header("POLYAI_API_KEY", &settings.api_key)? },
            platform,
            account_id: settings.account_id.clone(),
            project_id: settings.project_id.clone(),
            conversation_api: settings.conversation_api,
            max_response: settings.max_response,
        })
    }

    /// The relay project whose key and ids this client uses.
    pub fn project(&self) -> &ProjectName {
        &self.project
    }

    /// The PolyAI project this client fetches from (a span attribute of the worker's traces).
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// `{base}/v3/{account}/{project}/conversations`, then `tail`.
    fn conversations_url(&self, tail: &[&str]) -> Url {
        let path = [&["v3", self.account_id.as_str(), self.project_id.as_str(), "conversations"], tail].concat();
        self.runtime.base.join(&path)
    }

    /// The host and URL of one conversation (plus `tail` segments), by the configured API.
    fn conversation_url(&self, conversation_id: &str, tail: &[&str]) -> (&Host, Url) {
        // Each segment is escaped, so an odd id cannot change the path.
        let by_id = [&[conversation_id], tail].concat();
        match (self.conversation_api, &self.platform) {
            (ConversationApi::Agents, Some(platform)) => {
                let path = [&["v1", "agents", self.project_id.as_str(), "conversations"], by_id.as_slice()].concat();
                (platform, platform.base.join(&path))
            }
            _ => (&self.runtime, self.conversations_url(&by_id)),
        }
    }

    /// One conversation, as the API sent it.
    pub async fn conversation(&self, conversation_id: &str) -> Result<Bytes, ApiError> {
        let (host, url) = self.conversation_url(conversation_id, &[]);
        let response = self.get(host, url, "application/json").await?;
        capped::read_capped(response, self.max_response).await
    }

    /// A one-item list request: does the key work for this project?
    pub async fn probe(&self) -> Result<Bytes, ApiError> {
        let mut url = self.conversations_url(&[]);
        url.query_pairs_mut().append_pair("limit", "1");
        let response = self.get(&self.runtime, url, "application/json").await?;
        capped::read_capped(response, self.max_response).await
    }

    /// GET with the host's key, through the JSON client.
    async fn get(&self, host: &Host, url: Url, accept: &str) -> Result<Response, ApiError> {
        self.get_with(&self.http, host, url, accept).await
    }

    /// GET with the host's key through `http`; a non-2xx answer becomes an [`ApiError`].
    async fn get_with(
        &self,
        http: &reqwest::Client,
        host: &Host,
        url: Url,
        accept: &str,
    ) -> Result<Response, ApiError> {
        let response = http
            .get(url)
            .header("x-api-key", host.key.clone())
            .header("accept", accept)
            .send()
            .await
            .map_err(|e| ApiError::Transport(transport_detail(&e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_of(response, &host.key).await)
    }
}

/// Reads an error answer into an [`ApiError`] with a one-line detail and the correlation id.
/// `key`, the one the request carried, is cut out of the detail: an answer whose body is not
/// one of the API's shapes is quoted, and a gateway or proxy in between may echo the request.
pub(crate) async fn error_of(response: Response, key: &HeaderValue) -> ApiError {
    let status = response.status();
    if status.is_redirection() {
        // Not followed (see `clients`): where it pointed is the detail; the body, if any, is a
        // page for browsers.
        let location = response.headers().get("location").and_then(|v| v.to_str().ok());
        return classify(status, None, redirect_detail(location, response.url()));
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let correlation =
        response.headers().get("x-polyai-correlation-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = capped::read_capped(response, capped::ERROR_BODY_LIMIT).await.unwrap_or_default();
    // Before the detail is cut short, so that no part of the key is left either.
    let body = match key.to_str() {
        Ok(key) if !key.is_empty() && String::from_utf8_lossy(&body).contains(key) => {
            bytes::Bytes::from(String::from_utf8_lossy(&body).replace(key, "[the API key]"))
        }
        _ => body,
    };
    let mut detail = error_detail(&body);
    if let Some(id) = correlation {
        detail.push_str(&format!(" (correlation id {id})"));
    }
    classify(status, retry_after, detail)
}

fn classify(status: StatusCode, retry_after: Option<Duration>, detail: String) -> ApiError {
    let code = status.as_u16();
    match code {
        429 => ApiError::RateLimited { retry_after },
        404 => ApiError::NotFound { detail },
        401 | 403 => ApiError::Unauthorized { status: code, detail },
        // 408 is the server giving up waiting: as transient as a 5xx.
        408 | 500..=599 => ApiError::Server { status: code, detail },
        _ => ApiError::Rejected { status: code, detail },
    }
}

/// reqwest's error chain without the URL (the URL is ours; the chain says what went wrong).
pub fn transport_detail(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut detail = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        detail = format!("{detail}: {inner}");
        source = inner.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_what_the_worker_does() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), None, String::new());
        assert!(matches!(c(429), ApiError::RateLimited { .. }));
        assert!(matches!(c(404), ApiError::NotFound { .. }));
        assert!(matches!(c(401), ApiError::Unauthorized { .. }));
        assert!(matches!(c(403), ApiError::Unauthorized { .. }));
        assert!(matches!(c(503), ApiError::Server { .. }));
        assert!(matches!(c(408), ApiError::Server { .. }));
        assert!(matches!(c(400), ApiError::Rejected { .. }));
        assert!(matches!(c(422), ApiError::Rejected { .. }));
        // A redirect is not followed, and asking again would be redirected again.
        assert!(matches!(c(302), ApiError::Rejected { status: 302, .. }));
        assert!(matches!(c(307), ApiError::Rejected { status: 307, .. }));
    }
}
