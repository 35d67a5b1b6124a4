//! The Webhooks API on the platform host: register, list and rotate webhook endpoints.

use reqwest::header::HeaderValue;
use secrecy::SecretString;
use serde_json::{json, Value};
use url::Url;

use super::{clients::api_client, error_of, key_header, transport_detail, ApiError};
use crate::config::{BaseUrl, PlatformSettings};

/// The reference path; the quickstart's `/v1/webhooks/endpoints` is the fallback on a 404.
const REFERENCE_PATH: [&str; 2] = ["v1", "webhook-endpoints"];
const QUICKSTART_PATH: [&str; 3] = ["v1", "webhooks", "endpoints"];

#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
}

/// An endpoint as created: its id and, this once, its signing secret.
#[derive(Debug)]
pub struct RegisteredEndpoint {
    pub id: String,
    pub signing_secret: Option<SecretString>,
    /// Which path answered (the docs disagree on it).
    pub path: String,
}

pub struct EndpointClient {
    http: reqwest::Client,
    base: BaseUrl,
    key: HeaderValue,
}

impl EndpointClient {
    pub fn new(settings: &PlatformSettings) -> anyhow::Result<Self> {
        Ok(Self {
            http: api_client(settings.timeout)?,
            base: settings.url.clone(),
            key: key_header("POLYAI_PLATFORM_API_KEY", &settings.api_key)?,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        self.base.join(segments)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let response = request
            .header("x-api-key", self.key.clone())
            .send()
            .await
            .map_err(|e| ApiError::Transport(transport_detail(&e)))?;
        if !response.status().is_success() {
            return Err(error_of(response, &self.key).await);
        }
        let bytes = response.bytes().await.map_err(|e| ApiError::Transport(transport_detail(&e)))?;
        Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    /// Creates the endpoint: the reference API first, the quickstart's path on a 404.
    pub async fn create(&self, endpoint: &NewEndpoint) -> Result<RegisteredEndpoint, ApiError> {
        let reference = json!({"name": endpoint.name, "url": endpoint.url, "event_types": endpoint.event_types});
        let (body, path) = match self.send(self.http.post(self.url(&REFERENCE_PATH)).json(&reference)).await {
            Ok(body) => (body, REFERENCE_PATH.join("/")),
            Err(ApiError::NotFound { .. }) => {
                let quickstart =
                    json!({"url": endpoint.url, "description": endpoint.name, "events": endpoint.event_types});
                let body = self.send(self.http.post(self.url(&QUICKSTART_PATH)).json(&quickstart)).await?;
                (body, QUICKSTART_PATH.join("/"))
            }
            Err(other) => return Err(other),
        };
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let signing_secret = body["signing_secret"].as_str().map(SecretString::from);
        Ok(RegisteredEndpoint { id, signing_secret, path: format!("/{path}") })
    }

    /// Every endpoint of the account (the API never includes secrets here).
    pub async fn list(&self) -> Result<Vec<Value>, ApiError> {
        let body = self.send(self.http.get(self.url(&REFERENCE_PATH))).await?;
        Ok(body["data"].as_array().cloned().unwrap_or_default())
    }

    /// A new signing secret for `id`; the previous one stops working at once.
    pub async fn rotate(&self, id: &str) -> Result<SecretString, ApiError> {
        let url = self.url(&[REFERENCE_PATH[0], REFERENCE_PATH[1], id, "rotate-secret"]);
        let body = self.send(self.http.post(url)).await?;
        body["signing_secret"]
            .as_str()
            .map(SecretString::from)
            .ok_or_else(|| ApiError::Server { status: 200, detail: "the rotate answer held no signing_secret".into() })
    }
}
