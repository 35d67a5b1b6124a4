//! Client of PolyAI's Conversations API v3: fetch one conversation, probe the key.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::{header::HeaderValue, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use url::Url;

use crate::config::ApiSettings;

/// Why a fetch failed, sorted by what the worker does about it (design §5).
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
}

impl ApiError {
    /// Label for the fetch metric.
    pub fn status_label(&self) -> String {
        match self {
            Self::RateLimited { .. } => "429".into(),
            Self::NotFound { .. } => "404".into(),
            Self::Server { status, .. } | Self::Unauthorized { status, .. } | Self::Rejected { status, .. } => {
                status.to_string()
            }
            Self::Transport(_) => "transport".into(),
        }
    }
}

/// The Conversations API v3 client. Cheap to clone; the key is held as a sensitive header value
/// so neither `Debug` nor reqwest's logging can print it.
#[derive(Clone)]
pub struct PolyaiClient {
    http: reqwest::Client,
    base_url: Url,
    account_id: String,
    project_id: String,
    api_key: HeaderValue,
}

impl std::fmt::Debug for PolyaiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolyaiClient").field("base_url", &self.base_url.as_str()).finish_non_exhaustive()
    }
}

impl PolyaiClient {
    pub fn new(settings: &ApiSettings) -> anyhow::Result<Self> {
        let mut api_key = HeaderValue::from_str(settings.api_key.expose_secret())
            .map_err(|_| anyhow::anyhow!("POLYAI_API_KEY holds characters a header cannot carry"))?;
        api_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("polyai-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base_url: settings.base_url.clone(),
            account_id: settings.account_id.clone(),
            project_id: settings.project_id.clone(),
            api_key,
        })
    }

    fn conversations_url(&self) -> Url {
        let mut url = self.base_url.clone();
        url.path_segments_mut().expect("http URLs have paths").pop_if_empty().extend([
            "v3",
            &self.account_id,
            &self.project_id,
            "conversations",
        ]);
        url
    }

    /// `GET /v3/{account}/{project}/conversations/{id}`: the conversation JSON, untouched.
    pub async fn conversation(&self, conversation_id: &str) -> Result<Bytes, ApiError> {
        let mut url = self.conversations_url();
        // push() escapes the id, so an odd id cannot change the path.
        url.path_segments_mut().expect("http URLs have paths").push(conversation_id);
        self.get(url).await
    }

    /// A one-item list request: does the key work for this project?
    pub async fn probe(&self) -> Result<Bytes, ApiError> {
        let mut url = self.conversations_url();
        url.query_pairs_mut().append_pair("limit", "1");
        self.get(url).await
    }

    async fn get(&self, url: Url) -> Result<Bytes, ApiError> {
        let response = self
            .http
            .get(url)
            .header("x-api-key", self.api_key.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| ApiError::Transport(transport_detail(&e)))?;
        let status = response.status();
        if status.is_success() {
            return response.bytes().await.map_err(|e| ApiError::Transport(transport_detail(&e)));
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let correlation =
            response.headers().get("x-polyai-correlation-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await.unwrap_or_default();
        let mut detail = error_detail(&body);
        if let Some(id) = correlation {
            detail.push_str(&format!(" (correlation id {id})"));
        }
        Err(classify(status, retry_after, detail))
    }
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

/// reqwest's message without the URL: the URL is ours and fine to log, but the message alone reads better.
fn transport_detail(error: &reqwest::Error) -> String {
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

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3); the docs do not say which.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The three error shapes the docs show (polyai-api.md §5), read for a log line.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Current {
        error_code: String,
        error_message: Option<String>,
    },
    Nested {
        error: NestedError,
    },
    Alerts {
        message: String,
        #[serde(default)]
        errors: Vec<FieldError>,
    },
}

#[derive(Deserialize)]
struct NestedError {
    code: serde_json::Value,
    message: Option<String>,
}

#[derive(Deserialize)]
struct FieldError {
    field: Option<String>,
    message: Option<String>,
}

/// A short description of an error body; unknown shapes are quoted raw, cut short.
pub fn error_detail(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody::Current { error_code, error_message }) => {
            format!("{error_code}: {}", error_message.unwrap_or_default())
        }
        Ok(ErrorBody::Nested { error }) => {
            let code = error.code.as_str().map(str::to_owned).unwrap_or_else(|| error.code.to_string());
            format!("{code}: {}", error.message.unwrap_or_default())
        }
        Ok(ErrorBody::Alerts { message, errors }) => {
            let fields: Vec<String> = errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field.unwrap_or_default(), e.message.unwrap_or_default()))
                .collect();
            if fields.is_empty() {
                message
            } else {
                format!("{message} ({})", fields.join("; "))
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let cut: String = text.chars().take(200).collect();
            if cut.is_empty() {
                "no error body".into()
            } else {
                cut
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn all_three_error_shapes_are_read() {
        let current = br#"{"success":false,"error":"x","error_id":"e1","error_code":"CONVERSATIONS_NOT_FOUND","error_message":"Conversation not found","data":null}"#;
        assert_eq!(error_detail(current), "CONVERSATIONS_NOT_FOUND: Conversation not found");
        let nested =
            br#"{"error":{"code":"PROJECT_NOT_FOUND","id":15001,"message":"Project not found","correlation_id":"c"}}"#;
        assert_eq!(error_detail(nested), "PROJECT_NOT_FOUND: Project not found");
        let alerts = br#"{"message":"Validation failed","errors":[{"field":"limit","message":"too big"}]}"#;
        assert_eq!(error_detail(alerts), "Validation failed (limit: too big)");
        let raw = "x".repeat(500);
        assert_eq!(error_detail(raw.as_bytes()).len(), 200);
        assert_eq!(error_detail(b""), "no error body");
    }

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
    }
}
