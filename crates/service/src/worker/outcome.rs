//! What replaces an event once it is processed: its enriched record, a retry, a hold in a delay
//! queue, or a dead letter. Each is published and confirmed before the event is acked; each is
//! counted with the event's project as a label.

use std::{fmt::Display, sync::atomic::Ordering, time::Duration};

use serde_json::value::RawValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{field::Empty, Instrument};

use super::{projects::Project, record, Settle, Worker};
use crate::{
    queue::{self, headers, Destination, Message, PublishError},
    telemetry::{names, trace_context, traces::trace_span},
};

/// How long a worker keeps trying to publish through a broker outage before it gives the
/// message back to the queue instead.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);

/// Every reason an event of a served project is dead-lettered for
/// (`relay_dead_letters_total{reason}`), so that each project's counts start at 0. An event of a
/// project the worker does not serve is dead-lettered as `unknown_project`, under its own label.
pub(super) const DEAD_LETTER_REASONS: [&str; 8] = [
    "attempts_exhausted",
    "no_conversation_id",
    "not_found",
    "rejected",
    "too_large",
    "unreadable",
    "unserialisable",
    "unusable",
];

/// The reason of an event naming a project the worker does not serve.
pub(super) const UNKNOWN_PROJECT: &str = "unknown_project";

impl Worker {
    /// Sends the event to a delay queue for another attempt after `delay`; `attempts` is what its
    /// header says from now on.
    pub(super) async fn retry(
        &self,
        message: &Message,
        project: &str,
        attempts: u32,
        delay: Duration,
        reason: &'static str,
        error: &(dyn Display + Sync),
    ) -> Settle {
        let mut retry = message.clone();
        // Its calls' turns were taken: a retry takes new ones.
        retry.headers.remove(headers::TURN);
        retry.headers.insert(headers::ATTEMPTS.to_owned(), attempts.to_string());
        retry.headers.insert(headers::ERROR.to_owned(), error.to_string());
        let settle = settle(self.publish_patiently(Destination::Retry { delay }, retry).await);
        if settle == Settle::Ack {
            self.count_retry(project, reason);
            tracing::Span::current().record("outcome", "retried");
            tracing::info!(%error, attempts, delay_ms = delay.as_millis() as u64, "event will be retried");
        }
        settle
    }

    /// Sends the event to a delay queue until its project can be asked again, its attempts
    /// untouched: the project is stuck, not the event. Logged at debug only: the project's
    /// pause is logged once, and a stuck project's events come by every probe interval.
    pub(super) async fn hold(
        &self,
        message: &Message,
        project: &str,
        delay: Duration,
        reason: &'static str,
        why: &str,
    ) -> Settle {
        let mut held = message.clone();
        held.headers.insert(headers::ERROR.to_owned(), why.to_owned());
        let settle = settle(self.publish_patiently(Destination::Retry { delay }, held).await);
        if settle == Settle::Ack {
            self.count_retry(project, reason);
            tracing::Span::current().record("outcome", "held_back");
            tracing::debug!(why, delay_ms = delay.as_millis() as u64, "event held back");
        }
        settle
    }

    fn count_retry(&self, project: &str, reason: &'static str) {
        let project = project.to_owned();
        self.metrics
            .record(|| metrics::counter!(names::RETRIES, "project" => project, "reason" => reason).increment(1));
    }

    pub(super) async fn dead_letter(
        &self,
        message: &Message,
        project: &str,
        attempts: u32,
        reason: &'static str,
        error: &str,
    ) -> Settle {
        debug_assert!(DEAD_LETTER_REASONS.contains(&reason) || reason == UNKNOWN_PROJECT, "{reason} counted from 0");
        let mut dead = message.clone();
        dead.headers.remove(headers::TURN);
        dead.headers.insert(headers::ATTEMPTS.to_owned(), attempts.to_string());
        dead.headers.insert(headers::ERROR.to_owned(), error.to_owned());
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        dead.headers.insert(headers::DEAD_AT.to_owned(), now);
        let settle = settle(self.publish_patiently(Destination::Dead, dead).await);
        if settle == Settle::Ack {
            let project = project.to_owned();
            self.metrics.record(|| {
                metrics::counter!(names::DEAD_LETTERS, "project" => project, "reason" => reason).increment(1)
            });
            tracing::Span::current().record("outcome", "dead_lettered");
            tracing::warn!(error, attempts, reason, "event dead-lettered");
        }
        settle
    }

    pub(super) async fn publish_record(
        &self,
        message: &Message,
        project: &Project,
        conversation: Option<&RawValue>,
        audio: Option<serde_json::Value>,
    ) -> Settle {
        let label = project.name.as_str();
        let event: &RawValue = match serde_json::from_slice(&message.body) {
            Ok(event) => event,
            Err(error) => {
                return self.dead_letter(message, label, message.attempts(), "unreadable", &error.to_string()).await
            }
        };
        let transcript_visible = conversation.is_none_or(record::transcript_visible);
        // Once per project: the setting is the project's own.
        if !transcript_visible && !project.transcript_hint_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(project = label, "conversations of this project report turns but carry no transcript: turn on the project's \"Conversation transcript\" setting (show_transcripts) in Agent Studio");
        }
        let record = record::EnrichedRecord {
            schema: record::SCHEMA,
            event_id: &message.message_id,
            event_type: &message.event_type,
            project: label,
            received_at: message.header(headers::RECEIVED_AT),
            fetched_at: OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
            event,
            conversation,
            transcript_visible,
            audio,
        };
        let body = match serde_json::to_vec(&record) {
            Ok(body) => body,
            Err(error) => {
                return self.dead_letter(message, label, message.attempts(), "unserialisable", &error.to_string()).await
            }
        };
        let mut enriched = message.clone();
        enriched.body = body.into();
        enriched.headers.remove(headers::ATTEMPTS);
        enriched.headers.remove(headers::NOT_FOUND_ATTEMPTS);
        for name in headers::FAILING {
            enriched.headers.remove(name);
        }
        enriched.headers.remove(headers::ERROR);
        enriched.headers.remove(headers::TURN);
        match self.publish_patiently(Destination::Conversations, enriched).await {
            Ok(()) => {
                let project = project.label();
                self.metrics.record(|| metrics::counter!(names::ENRICHED, "project" => project).increment(1));
                tracing::Span::current().record("outcome", "enriched");
                tracing::info!(transcript_visible, "event enriched");
                Settle::Ack
            }
            // Every attempt would fetch the same conversation and build the same record, over the
            // broker's limit again: the event is dead-lettered now. Its raw event fits, having come
            // through the broker.
            Err(error @ PublishError::TooLarge { .. }) => {
                let why = format!("the enriched record cannot be published: {error}");
                self.dead_letter(message, label, message.attempts() + 1, "too_large", &why).await
            }
            Err(_) => Settle::Requeue,
        }
    }

    /// Publishes `message` through short broker outages, in a span whose context the message
    /// carries: a record's consumer, or the next attempt of a retry, continues from it. A dead
    /// letter carries it as a reference only (see [`trace_context`]). Gives up past
    /// [`PUBLISH_PATIENCE`], at shutdown, or at once on a permanent error (over the broker's limit).
    async fn publish_patiently(&self, to: Destination, mut message: Message) -> Result<(), PublishError> {
        let span = trace_span!("publish", otel.kind = "producer", destination = to.label(), result = Empty);
        match to {
            Destination::Dead => trace_context::for_dead_letter(&span, &mut message.headers),
            _ => trace_context::inject(&span, &mut message.headers),
        }
        let publisher = self.publisher.as_ref();
        let result = queue::publish_until_confirmed(publisher, to, &message, PUBLISH_PATIENCE, &self.shutdown)
            .instrument(span.clone())
            .await;
        span.record(
            "result",
            match &result {
                Ok(()) => "ack",
                Err(error) if error.is_permanent() => error.label(),
                Err(_) => "requeue",
            },
        );
        result
    }
}

/// A retry, a hold or a dead letter that could not be published goes back to the queue rather
/// than being held or dropped. Even one over the broker's limit: it is the raw event, which the
/// broker took, so only a RELAY_BROKER_MAX_MESSAGE below the broker's own can refuse it, and the
/// broker's delivery limit dead-letters it after RELAY_DELIVERY_LIMIT rounds.
fn settle(published: Result<(), PublishError>) -> Settle {
    match published {
        Ok(()) => Settle::Ack,
        Err(_) => Settle::Requeue,
    }
}
