//! What replaces an event once it is processed: its enriched record, a retry, a hold in a delay
//! queue, or a dead letter. Each is published and confirmed before the event is acked; each is
//! counted with the event's project as a label.

use std::{fmt::Display, sync::atomic::Ordering, time::Duration};

use serde_json::value::RawValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{field::Empty, Instrument};

use super::{projects::Project, record, Settle, Worker};
use crate::{
    queue::{self, headers, Destination, Message},
    telemetry::{names, trace_context, traces::trace_span},
};

/// How long a worker keeps trying to publish through a broker outage before it gives the
/// message back to the queue instead.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);

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
        retry.headers.insert(headers::ATTEMPTS.to_owned(), attempts.to_string());
        retry.headers.insert(headers::ERROR.to_owned(), error.to_string());
        let settle = self.publish_patiently(Destination::Retry { delay }, retry).await;
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
        let settle = self.publish_patiently(Destination::Retry { delay }, held).await;
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
        let mut dead = message.clone();
        dead.headers.insert(headers::ATTEMPTS.to_owned(), attempts.to_string());
        dead.headers.insert(headers::ERROR.to_owned(), error.to_owned());
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        dead.headers.insert(headers::DEAD_AT.to_owned(), now);
        let settle = self.publish_patiently(Destination::Dead, dead).await;
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
        enriched.headers.remove(headers::ERROR);
        let settle = self.publish_patiently(Destination::Conversations, enriched).await;
        if settle == Settle::Ack {
            let project = project.label();
            self.metrics.record(|| metrics::counter!(names::ENRICHED, "project" => project).increment(1));
            tracing::Span::current().record("outcome", "enriched");
            tracing::info!(transcript_visible, "event enriched");
        }
        settle
    }

    /// Publishes `message` with [`Self::publish_until_confirmed`], in a span whose context the
    /// message carries: a record's consumer, or the next attempt of a retry, continues from it.
    /// A dead letter carries it as a reference only (see [`trace_context`]).
    async fn publish_patiently(&self, to: Destination, mut message: Message) -> Settle {
        let span = trace_span!("publish", otel.kind = "producer", destination = to.label(), result = Empty);
        match to {
            Destination::Dead => trace_context::for_dead_letter(&span, &mut message.headers),
            _ => trace_context::inject(&span, &mut message.headers),
        }
        let settle = self.publish_until_confirmed(to, message).instrument(span.clone()).await;
        span.record("result", if settle == Settle::Ack { "ack" } else { "requeue" });
        settle
    }

    /// Publishes through short broker outages; past [`PUBLISH_PATIENCE`], or at shutdown, the
    /// message goes back to the queue (requeue) rather than being held or dropped.
    async fn publish_until_confirmed(&self, to: Destination, message: Message) -> Settle {
        let publisher = self.publisher.as_ref();
        match queue::publish_until_confirmed(publisher, to, &message, PUBLISH_PATIENCE, &self.shutdown).await {
            Ok(()) => Settle::Ack,
            Err(_) => Settle::Requeue,
        }
    }
}
