//! The list pages of one pass, and what the pass reads from each conversation.

use std::time::Duration;

use serde::Deserialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_util::sync::CancellationToken;

use super::{Pass, ReconcileError};
use crate::polyai::{ApiError, ListRequest, PolyaiClient, Summary};

/// Transient list failures tolerated in a row before the pass gives up (the next one retries).
const ATTEMPTS: u32 = 5;
/// The longest `Retry-After` waited out within a pass.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(120);

/// A listed conversation, as far as reconciliation cares.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub in_progress: bool,
    pub environment: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    pub started_at_text: Option<String>,
    /// Seconds.
    pub total_duration: Option<f64>,
}

#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    total_duration: Option<f64>,
}

impl Call {
    fn from_summary(summary: Summary) -> Self {
        let fields = serde_json::from_str::<Fields>(summary.raw.get()).unwrap_or(Fields {
            environment: None,
            started_at: None,
            total_duration: None,
        });
        Self {
            started_at: fields.started_at.as_deref().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
            started_at_text: fields.started_at,
            id: summary.id,
            in_progress: summary.in_progress,
            environment: fields.environment,
            total_duration: fields.total_duration,
        }
    }

    /// A call is finished at `started_at + total_duration`; `None` when the API left either out.
    pub fn finished_at(&self) -> Option<OffsetDateTime> {
        let duration = Duration::try_from_secs_f64(self.total_duration?.max(0.0)).ok()?;
        Some(self.started_at? + duration)
    }
}

/// Pages by cursor, else by `next_offset`, until a page is empty or names no next one.
pub struct Pages {
    request: ListRequest,
    done: bool,
}

impl Pages {
    pub fn new(pass: &Pass) -> Self {
        let request = ListRequest {
            start_time: Some(pass.start),
            end_time: Some(pass.end),
            client_env: Some(pass.client_env.clone()),
            limit: Some(pass.page_size),
            cursor: None,
            offset: None,
        };
        Self { request, done: false }
    }

    pub async fn next(
        &mut self,
        client: &PolyaiClient,
        stop: &CancellationToken,
    ) -> Result<Option<Vec<Call>>, ReconcileError> {
        if self.done {
            return Ok(None);
        }
        let mut failures = 0;
        let page = loop {
            let wait = match client.list(&self.request).await {
                Ok(page) => break page,
                Err(ApiError::RateLimited { retry_after }) => {
                    retry_after.unwrap_or(Duration::from_secs(1)).min(RETRY_AFTER_CAP)
                }
                Err(error @ (ApiError::Server { .. } | ApiError::Transport(_))) if failures + 1 < ATTEMPTS => {
                    failures += 1;
                    tracing::warn!(%error, "listing conversations failed; retrying");
                    Duration::from_secs(1) * 2u32.pow(failures - 1)
                }
                Err(error) => return Err(ReconcileError::List(error.to_string())),
            };
            tokio::select! {
                _ = stop.cancelled() => return Err(ReconcileError::Interrupted),
                _ = tokio::time::sleep(wait) => {}
            }
        };
        let next_cursor = page.cursor.filter(|c| Some(c) != self.request.cursor.as_ref());
        let next_offset = page.next_offset.filter(|o| Some(*o) != self.request.offset);
        self.done = page.conversations.is_empty() || (next_cursor.is_none() && next_offset.is_none());
        if next_cursor.is_some() {
            self.request.cursor = next_cursor;
        } else {
            self.request.offset = next_offset;
        }
        Ok(Some(page.conversations.into_iter().map(Call::from_summary).collect()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn call(json: &str) -> Call {
        let raw = RawValue::from_string(json.to_owned()).unwrap();
        Call::from_summary(Summary { id: "CA1".into(), in_progress: false, raw })
    }

    #[test]
    fn a_call_is_finished_at_its_start_plus_its_total_duration() {
        let c = call(r#"{"started_at":"2026-11-20T09:14:03Z","total_duration":74,"environment":"live"}"#);
        let expected = OffsetDateTime::parse("2026-11-20T09:15:17Z", &Rfc3339).unwrap();
        assert_eq!(c.finished_at(), Some(expected));
        assert_eq!(c.environment.as_deref(), Some("live"));
        assert_eq!(call(r#"{"total_duration":74}"#).finished_at(), None);
        assert_eq!(call(r#"{"started_at":"yesterday","total_duration":74}"#).finished_at(), None);
    }
}
