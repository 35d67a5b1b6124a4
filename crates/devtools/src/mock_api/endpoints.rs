//! Webhook endpoints (polyai-api.md §2): the model, its validation, and the account's ten slots.

use std::collections::BTreeMap;

use rand::{distr::Alphanumeric, Rng};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{error::Failure, generate::format_time};

/// PolyAI's limit per account; one more is a 409.
pub const MAX_ENDPOINTS: usize = 10;
/// The reference enum plus the two conversation events the quickstart registers.
pub const EVENT_TYPES: &[&str] = &["alerts.triggered", "alerts.resolved", "conversation.completed", "handoff.created"];
const TIMEOUT_MS: std::ops::RangeInclusive<u32> = 1000..=30_000;

/// A WebhookEndpoint as get and list show it: never with its signing secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub event_types: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u32,
    pub created_at: String,
    pub updated_at: String,
}

/// `additionalProperties: false` in the spec, hence `deny_unknown_fields`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: Option<u32>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<u32>,
    pub enabled: Option<bool>,
}

/// The endpoints of one account, in creation order. The signing secrets are handed
/// out and not kept: nothing here delivers to registered endpoints, so nothing needs them.
#[derive(Debug, Default)]
pub struct Endpoints {
    items: Vec<WebhookEndpoint>,
}

impl Endpoints {
    /// The new endpoint and its signing secret, which is shown this once.
    pub fn create(&mut self, request: CreateEndpoint) -> Result<(WebhookEndpoint, String), Failure> {
        check_name(&request.name)?;
        check_url(&request.url)?;
        check_event_types(&request.event_types)?;
        let timeout_ms = request.timeout_ms.unwrap_or(5000);
        check_timeout(timeout_ms)?;
        if self.items.len() >= MAX_ENDPOINTS {
            return Err(Failure::EndpointLimit(MAX_ENDPOINTS));
        }
        let now = now();
        let endpoint = WebhookEndpoint {
            id: format!("whe_{}", random_text(22)),
            name: request.name,
            url: request.url,
            enabled: request.enabled.unwrap_or(true),
            event_types: request.event_types,
            headers: request.headers,
            timeout_ms,
            created_at: now.clone(),
            updated_at: now,
        };
        self.items.push(endpoint.clone());
        Ok((endpoint, new_secret()))
    }

    pub fn list(&self, enabled: Option<bool>, event_type: Option<&str>) -> Vec<WebhookEndpoint> {
        self.items
            .iter()
            .filter(|e| enabled.is_none_or(|wanted| e.enabled == wanted))
            .filter(|e| event_type.is_none_or(|wanted| e.event_types.iter().any(|t| t == wanted)))
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Result<WebhookEndpoint, Failure> {
        self.position(id).map(|i| self.items[i].clone())
    }

    /// Applies a flat partial update; nothing changes unless all of it is valid.
    pub fn update(&mut self, id: &str, request: UpdateEndpoint) -> Result<WebhookEndpoint, Failure> {
        let at = self.position(id)?;
        if let Some(name) = &request.name {
            check_name(name)?;
        }
        if let Some(url) = &request.url {
            check_url(url)?;
        }
        if let Some(types) = &request.event_types {
            check_event_types(types)?;
        }
        if let Some(timeout) = request.timeout_ms {
            check_timeout(timeout)?;
        }
        let endpoint = &mut self.items[at];
        endpoint.name = request.name.unwrap_or(std::mem::take(&mut endpoint.name));
        endpoint.url = request.url.unwrap_or(std::mem::take(&mut endpoint.url));
        endpoint.event_types = request.event_types.unwrap_or(std::mem::take(&mut endpoint.event_types));
        endpoint.headers = request.headers.unwrap_or(std::mem::take(&mut endpoint.headers));
        endpoint.timeout_ms = request.timeout_ms.unwrap_or(endpoint.timeout_ms);
        endpoint.enabled = request.enabled.unwrap_or(endpoint.enabled);
        endpoint.updated_at = now();
        Ok(endpoint.clone())
    }

    pub fn delete(&mut self, id: &str) -> Result<(), Failure> {
        let at = self.position(id)?;
        self.items.remove(at);
        Ok(())
    }

    /// A new signing secret; the old one is invalid at once, as PolyAI documents (no grace period).
    pub fn rotate(&mut self, id: &str) -> Result<String, Failure> {
        let at = self.position(id)?;
        self.items[at].updated_at = now();
        Ok(new_secret())
    }

    fn position(&self, id: &str) -> Result<usize, Failure> {
        let well_formed = id
            .strip_prefix("whe_")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !well_formed {
            return Err(Failure::InvalidId(format!(
                "`{id}` is not a webhook endpoint id (whe_ and letters or digits)"
            )));
        }
        self.items.iter().position(|e| e.id == id).ok_or_else(|| Failure::EndpointNotFound(id.to_owned()))
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    let chars = name.chars().count();
    if !(1..=255).contains(&chars) {
        return Err(Failure::Schema("name must be 1 to 255 characters".into()));
    }
    Ok(())
}

fn check_url(text: &str) -> Result<(), Failure> {
    if !text.starts_with("https://") || url::Url::parse(text).is_err() {
        return Err(Failure::Schema("url must be an https:// URL".into()));
    }
    Ok(())
}

pub fn check_event_types(types: &[String]) -> Result<(), Failure> {
    if types.is_empty() {
        return Err(Failure::Schema("event_types needs at least one event type".into()));
    }
    match types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
        Some(unknown) => {
            Err(Failure::Schema(format!("unknown event type `{unknown}`; known: {}", EVENT_TYPES.join(", "))))
        }
        None => Ok(()),
    }
}

fn check_timeout(timeout_ms: u32) -> Result<(), Failure> {
    if !TIMEOUT_MS.contains(&timeout_ms) {
        return Err(Failure::Schema("timeout_ms must be from 1000 to 30000".into()));
    }
    Ok(())
}

fn now() -> String {
    format_time(OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc()))
}

fn random_text(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

fn new_secret() -> String {
    format!("whsec_{}", random_text(32))
}
