//! Signed webhooks about the generated conversations, sent the way PolyAI delivers them
//! (polyai-api.md §1): POST, `X-PolyAI-Timestamp`, `X-PolyAI-Signature`, `X-PolyAI-Event-ID`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::{json, Value};
use tokio::{sync::Semaphore, task::JoinSet, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{
    config::EmitConfig,
    generate::{format_time, Conversation},
};
use crate::sender::signed_post;

/// PolyAI's default delivery timeout (`timeout_ms` 5000): a receiver slower than that has failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Sends in flight at once, so a slow receiver cannot make the emitter pile up tasks.
const MAX_IN_FLIGHT: usize = 64;

/// How the sends went, for the summary line and for callers that wait on the emitter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmitSummary {
    /// Requests sent (answered or not).
    pub sent: usize,
    /// Answered 2xx.
    pub accepted: usize,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// No answer: connection refused, timeout.
    pub failed: usize,
}

/// One webhook before it is signed: its type and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_type: &'static str,
    pub body: Value,
}

/// One pass over the finished conversations, oldest first: `handoff.created` then
/// `conversation.completed` for a handoff, `conversation.completed` alone otherwise.
pub fn events(conversations: &[Conversation]) -> Vec<Event> {
    let mut events = Vec::new();
    for c in conversations.iter().rev().filter(|c| !c.in_progress) {
        let common = json!({
            "conversation_id": c.id, "environment": c.environment,
            "account_id": c.account_id, "project_id": c.project_id,
        });
        if c.handoff {
            let mut data = common.clone();
            data["handoff_reason"] = json!(c.handoff_reason);
            data["handoff_destination"] = json!(c.handoff_destination);
            events
                .push(Event { event_type: "handoff.created", body: json!({"type": "handoff.created", "data": data}) });
        }
        let mut data = common;
        data["channel"] = json!(c.channel);
        data["started_at"] = json!(format_time(c.started_at));
        data["finished_at"] = json!(c.finished_at().map(format_time));
        events.push(Event {
            event_type: "conversation.completed",
            body: json!({"type": "conversation.completed", "data": data}),
        });
    }
    events
}

/// Sends signed webhooks at a steady rate; built before serving so a bad client setup fails start-up.
pub struct Emitter {
    config: EmitConfig,
    http: reqwest::Client,
}

impl Emitter {
    pub fn new(config: EmitConfig) -> Result<Self, reqwest::Error> {
        let http = polyai_relay::http_client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .user_agent(concat!("polyai-relay-mock/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { config, http })
    }

    /// Sends `count` events (default: one pass) about `conversations`, stopping early on `shutdown`.
    /// Failed sends are counted, not retried: the point is to show what a receiver answered.
    pub async fn run(self, conversations: Arc<[Conversation]>, shutdown: CancellationToken) -> EmitSummary {
        let events = events(&conversations);
        let mut summary = EmitSummary::default();
        if events.is_empty() {
            tracing::warn!("no finished conversations to emit webhooks about");
            return summary;
        }
        let total = self.config.count.unwrap_or(events.len());
        let url = self.config.url.clone();
        tracing::info!(%url, total, rate = self.config.rate, scheme = ?self.config.scheme, "emitting webhooks");
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / self.config.rate));
        // Catch up after a stall, so the average rate is the one asked for.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let this = Arc::new(self);
        let mut sends = JoinSet::new();
        for n in 0..total {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => match permits.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let event = events[n % events.len()].clone();
            let this = this.clone();
            sends.spawn(async move {
                let status = this.send(&event).await;
                drop(permit);
                status
            });
            while let Some(done) = sends.try_join_next() {
                summary.record(done.ok().flatten());
            }
        }
        while let Some(done) = sends.join_next().await {
            summary.record(done.ok().flatten());
        }
        tracing::info!(
            sent = summary.sent,
            accepted = summary.accepted,
            failed = summary.failed,
            statuses = ?summary.statuses,
            "emitting finished"
        );
        summary
    }

    /// The status the receiver answered, or `None` when it did not answer.
    async fn send(&self, event: &Event) -> Option<u16> {
        let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        // Signed at send time: the timestamp says when the webhook was sent.
        let config = &self.config;
        let request = signed_post(
            &self.http,
            config.url.clone(),
            &config.secret,
            config.scheme,
            &event_id,
            event.body.to_string(),
        );
        let result = request.send().await;
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                tracing::debug!(event_id, event_type = event.event_type, status, "webhook emitted");
                Some(status)
            }
            Err(error) => {
                tracing::debug!(event_id, event_type = event.event_type, %error, "webhook not delivered");
                None
            }
        }
    }
}

impl EmitSummary {
    fn record(&mut self, status: Option<u16>) {
        self.sent += 1;
        match status {
            Some(status) => {
                *self.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    self.accepted += 1;
                }
            }
            None => self.failed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_api::generate::{conversations, Plan};

    #[test]
    fn one_pass_covers_each_finished_conversation_and_each_handoff() {
        let all = conversations(&Plan {
            seed: 9,
            count: 100,
            window: Duration::from_secs(86_400),
            window_end: time::OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap(),
            account_id: "ws-a",
            project_id: "PROJECT-A",
        });
        let finished = all.iter().filter(|c| !c.in_progress).count();
        let handoffs = all.iter().filter(|c| c.handoff).count();
        let events = events(&all);
        assert_eq!(events.len(), finished + handoffs);
        let handoff = events.iter().find(|e| e.event_type == "handoff.created").unwrap();
        assert!(handoff.body["data"]["handoff_reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(events.iter().all(|e| e.body["data"]["account_id"] == "ws-a"));
    }
}
