//! One event through the worker: fetch the conversation, then publish the enriched record, a
//! retry or a dead letter, and say how to settle the delivery. Nothing is acked before the
//! broker confirmed whatever replaces it.

use std::{sync::atomic::Ordering, time::Duration};

use serde_json::value::RawValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{record, Settle, Worker};
use crate::{
    event::{ConversationIdError, Fields},
    polyai::ApiError,
    queue::{self, headers, Destination, Message},
    telemetry::{
        names, trace_context,
        traces::{self, trace_span},
    },
};
use tracing::{field::Empty, Instrument};

/// The longest a 429 holds back every API call of the worker.
const SHARED_PAUSE_CAP: Duration = Duration::from_secs(60);

/// How long a worker keeps trying to publish through a broker outage before it gives the
/// message back to the queue instead.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);

impl Worker {
    /// Processes one message and says how to settle it.
    pub async fn process(&self, message: &Message) -> Settle {
        let attempts = message.attempts();
        let fields = match Fields::read(&message.body) {
            Ok(fields) => fields,
            Err(error) => return self.dead_letter(message, attempts, "unreadable", &error.to_string()).await,
        };
        let conversation_id = match fields.conversation() {
            Ok(id) => id,
            Err(error @ ConversationIdError::Missing) => {
                return self.dead_letter(message, attempts, "no_conversation_id", &error.to_string()).await;
            }
            // Never fetched: an id like `..` would change the request's path.
            Err(error) => return self.dead_letter(message, attempts, "rejected", &error.to_string()).await,
        };
        if let Some(id) = conversation_id {
            traces::set_attribute(&tracing::Span::current(), "conversation_id", id);
        }
        let (conversation, audio) = match conversation_id {
            Some(id) => match self.fetch_with_audio(id, attempts + 1).await {
                Ok(found) => found,
                Err(error) => return self.after_failure(message, attempts, error).await,
            },
            None => (None, None),
        };
        self.publish_record(message, conversation.as_deref(), audio).await
    }

    /// The conversation and, when audio download is on, its recording. `attempt` counts from 1.
    async fn fetch_with_audio(
        &self,
        conversation_id: &str,
        attempt: u32,
    ) -> Result<(Option<Box<RawValue>>, Option<serde_json::Value>), ApiError> {
        let conversation = self.fetch(conversation_id, attempt).await?;
        let audio = match &self.audio {
            Some(settings) => {
                self.save_audio(settings, conversation_id, &conversation).instrument(trace_span!("audio")).await?
            }
            None => None,
        };
        Ok((Some(conversation), audio))
    }

    async fn fetch(&self, conversation_id: &str, attempt: u32) -> Result<Box<RawValue>, ApiError> {
        let _slot = self.api_slots.acquire().await.expect("the semaphore is never closed");
        self.throttle.acquire().await;
        // After the slot and the rate limit: the span times the API alone.
        let span = trace_span!("fetch", otel.kind = "client", attempt, status = Empty);
        let result = self.client.conversation(conversation_id).instrument(span.clone()).await;
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(error) => error.status_label(),
        };
        span.record("status", status.as_str());
        self.metrics.record(|| metrics::counter!(names::FETCHES, "status" => status).increment(1));
        let body = result?;
        serde_json::from_slice::<Box<RawValue>>(&body).map_err(|_| ApiError::Server {
            status: 200,
            detail: "the API answered 200 with a body that is not JSON".into(),
        })
    }

    async fn after_failure(&self, message: &Message, attempts: u32, error: ApiError) -> Settle {
        let policy = &self.policy;
        match &error {
            ApiError::RateLimited { retry_after } => {
                // Not the event's fault: the attempt does not count, and every caller slows down.
                self.metrics.record(|| metrics::counter!(names::RATE_LIMITED).increment(1));
                let delay = policy.rate_limited(*retry_after);
                // Everyone slows down, but for a minute at most: deliveries held unacked longer
                // than the broker's consumer_timeout (30 min by default) would be taken back. This
                // event itself waits its whole Retry-After in a delay queue.
                self.throttle.pause(delay.min(SHARED_PAUSE_CAP));
                self.retry(message, attempts, delay, "rate_limited", &error).await
            }
            ApiError::Server { .. } | ApiError::Transport(_) => {
                let attempts = attempts + 1;
                if policy.gives_up(attempts) {
                    return self.dead_letter(message, attempts, "attempts_exhausted", &error.to_string()).await;
                }
                self.retry(message, attempts, policy.backoff(attempts), "transient", &error).await
            }
            ApiError::NotFound { .. } => {
                let attempts = attempts + 1;
                if policy.gives_up_on_not_found(attempts) {
                    return self.dead_letter(message, attempts, "not_found", &error.to_string()).await;
                }
                self.retry(message, attempts, policy.not_found_backoff(attempts), "not_found", &error).await
            }
            ApiError::Unauthorized { .. } => {
                // A key problem, not an event problem: stop taking events, keep this one queued.
                if !self.paused.send_replace(true) {
                    self.metrics.record(|| metrics::gauge!(names::WORKER_PAUSED).set(1.0));
                    tracing::error!(%error, "the API refused the key; pausing the worker until it is accepted again (check POLYAI_API_KEY and its project scope)");
                }
                tracing::Span::current().record("outcome", "paused");
                Settle::Release
            }
            ApiError::Rejected { .. } => self.dead_letter(message, attempts + 1, "rejected", &error.to_string()).await,
            // Asking again would get the same answer: over a size cap, or a name no file can have.
            ApiError::Unusable { .. } => self.dead_letter(message, attempts + 1, "unusable", &error.to_string()).await,
        }
    }

    async fn retry(
        &self,
        message: &Message,
        attempts: u32,
        delay: Duration,
        reason: &'static str,
        error: &ApiError,
    ) -> Settle {
        let mut retry = message.clone();
        retry.headers.insert(headers::ATTEMPTS.to_owned(), attempts.to_string());
        retry.headers.insert(headers::ERROR.to_owned(), error.to_string());
        let settle = self.publish_patiently(Destination::Retry { delay }, retry).await;
        if settle == Settle::Ack {
            self.metrics.record(|| metrics::counter!(names::RETRIES, "reason" => reason).increment(1));
            tracing::Span::current().record("outcome", "retried");
            tracing::info!(%error, attempts, delay_ms = delay.as_millis() as u64, "event will be retried");
        }
        settle
    }

    async fn dead_letter(&self, message: &Message, attempts: u32, reason: &'static str, error: &str) -> Settle {
        let mut dead = message.clone();
        dead.headers.insert(headers::ATTEMPTS.to_owned(), attempts.to_string());
        dead.headers.insert(headers::ERROR.to_owned(), error.to_owned());
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        dead.headers.insert(headers::DEAD_AT.to_owned(), now);
        let settle = self.publish_patiently(Destination::Dead, dead).await;
        if settle == Settle::Ack {
            self.metrics.record(|| metrics::counter!(names::DEAD_LETTERS, "reason" => reason).increment(1));
            tracing::Span::current().record("outcome", "dead_lettered");
            tracing::warn!(error, attempts, reason, "event dead-lettered");
        }
        settle
    }

    async fn publish_record(
        &self,
        message: &Message,
        conversation: Option<&RawValue>,
        audio: Option<serde_json::Value>,
    ) -> Settle {
        let event: &RawValue = match serde_json::from_slice(&message.body) {
            Ok(event) => event,
            Err(error) => return self.dead_letter(message, message.attempts(), "unreadable", &error.to_string()).await,
        };
        let transcript_visible = conversation.is_none_or(record::transcript_visible);
        if !transcript_visible && !self.transcript_hint_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!("conversations report turns but carry no transcript: turn on the project's \"Conversation transcript\" setting (show_transcripts) in Agent Studio");
        }
        let record = record::EnrichedRecord {
            schema: record::SCHEMA,
            event_id: &message.message_id,
            event_type: &message.event_type,
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
                return self.dead_letter(message, message.attempts(), "unserialisable", &error.to_string()).await
            }
        };
        let mut enriched = message.clone();
        enriched.body = body.into();
        enriched.headers.remove(headers::ATTEMPTS);
        enriched.headers.remove(headers::ERROR);
        let settle = self.publish_patiently(Destination::Conversations, enriched).await;
        if settle == Settle::Ack {
            self.metrics.record(|| metrics::counter!(names::ENRICHED).increment(1));
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
