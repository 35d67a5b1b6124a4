//! The list pages of one pass, and what the pass reads from each conversation.

use std::time::Duration;

use serde::Deserialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_util::sync::CancellationToken;

use super::{Pass, ReconcileError};
use crate::polyai::{listing_wait_after_429, ApiError, ListRequest, NextPage, PolyaiClient, Summary, Visited};

/// Transient list failures (429s included) tolerated in a row before the pass gives up (the next
/// one retries). A bound on 429s too: projects are reconciled one after another, so a key
/// rate-limited for hours would otherwise hold back every project after it.
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
    /// The latest time a turn of the call names, if the listing carries its turns.
    pub last_turn_at: Option<OffsetDateTime>,
}

#[derive(Deserialize, Default)]
struct Fields {
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    total_duration: Option<f64>,
}

/// The times of a turn; read apart from [`Fields`], so that a turn of another shape costs the call
/// only its turns' times.
#[derive(Deserialize)]
struct Turns {
    #[serde(default)]
    turns: Vec<TurnTimes>,
}

#[derive(Deserialize)]
struct TurnTimes {
    #[serde(default)]
    user_input_datetime: Option<String>,
    #[serde(default)]
    agent_response_datetime: Option<String>,
}

impl Call {
    fn from_summary(summary: Summary) -> Self {
        let fields = serde_json::from_str::<Fields>(summary.raw.get()).unwrap_or_default();
        let turns = serde_json::from_str::<Turns>(summary.raw.get()).map(|t| t.turns).unwrap_or_default();
        let last_turn_at = turns
            .iter()
            .flat_map(|turn| [&turn.user_input_datetime, &turn.agent_response_datetime])
            .filter_map(|time| OffsetDateTime::parse(time.as_deref()?, &Rfc3339).ok())
            .max();
        Self {
            started_at: fields.started_at.as_deref().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
            started_at_text: fields.started_at,
            id: summary.id,
            in_progress: summary.in_progress,
            environment: fields.environment,
            total_duration: fields.total_duration,
            last_turn_at,
        }
    }

    /// A call is finished at `started_at + total_duration` (design §9). The API may leave the
    /// duration out: then the latest time the call is known to have been going on, its last turn
    /// or else its start, so that a call that ended moments ago still waits out the settle time
    /// for its webhook. `None` without a start time.
    pub fn finished_at(&self) -> Option<OffsetDateTime> {
        let started = self.started_at?;
        let duration = self.total_duration.and_then(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)).ok());
        Some(match duration {
            Some(duration) => started + duration,
            None => self.last_turn_at.map_or(started, |last| last.max(started)),
        })
    }
}

/// Pages by cursor, else by `next_offset`, until the last page ([`crate::polyai::ListPage::next`]).
pub struct Pages {
    request: ListRequest,
    visited: Visited,
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
        Self { request, visited: Visited::default(), done: false }
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
                // A page over RELAY_API_MAX_RESPONSE (the list carries each call's turns): asked
                // again in smaller pages, rather than failing every pass of the project for good.
                Err(ApiError::Unusable { detail }) if self.request.limit.is_some_and(|limit| limit > 1) => {
                    let smaller = self.request.limit.unwrap_or(1) / 2;
                    tracing::warn!(%detail, limit = smaller, "a page of the conversations list was too large to read; asking for smaller pages");
                    self.request.limit = Some(smaller);
                    continue;
                }
                Err(ApiError::RateLimited { retry_after }) if failures + 1 < ATTEMPTS => {
                    failures += 1;
                    listing_wait_after_429(retry_after, failures).min(RETRY_AFTER_CAP)
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
        let next = page.next(&self.request, &mut self.visited);
        self.done = next == NextPage::End;
        (self.request.cursor, self.request.offset) = next.position();
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

    #[test]
    fn a_call_without_a_duration_is_finished_no_earlier_than_its_last_turn_or_its_start() {
        let at = |text: &str| OffsetDateTime::parse(text, &Rfc3339).unwrap();
        let turns = r#"{"started_at":"2026-11-20T09:14:03Z","turns":[
            {"user_input_datetime":"2026-11-20T09:14:10Z","agent_response_datetime":"2026-11-20T09:16:40Z"},
            {"user_input_datetime":"2026-11-20T09:15:00Z","agent_response_datetime":null}]}"#;
        assert_eq!(call(turns).finished_at(), Some(at("2026-11-20T09:16:40Z")));
        assert_eq!(call(r#"{"started_at":"2026-11-20T09:14:03Z"}"#).finished_at(), Some(at("2026-11-20T09:14:03Z")));
        // Turns of a shape of their own: the start still counts.
        let odd = r#"{"started_at":"2026-11-20T09:14:03Z","turns":"hidden"}"#;
        assert_eq!(call(odd).finished_at(), Some(at("2026-11-20T09:14:03Z")));
        // A duration, when given, decides.
        let both = r#"{"started_at":"2026-11-20T09:14:03Z","total_duration":10,
            "turns":[{"agent_response_datetime":"2026-11-20T09:20:00Z"}]}"#;
        assert_eq!(call(both).finished_at(), Some(at("2026-11-20T09:14:13Z")));
    }
}
