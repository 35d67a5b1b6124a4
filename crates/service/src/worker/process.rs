//! One event through the worker: pick its project, fetch the conversation with that project's
//! client, and choose the outcome ([`super::outcome`] publishes it). Nothing is acked before the
//! broker confirmed whatever replaces it.

use std::{sync::Arc, time::Duration};

use serde_json::value::RawValue;

use super::{
    audio,
    outcome::UNKNOWN_PROJECT,
    projects::{Project, UNKNOWN_LABEL},
    Settle, Worker,
};
use crate::{
    event::{ConversationIdError, Fields},
    polyai::{ApiError, KeyedCall},
    queue::{headers, Message, RETRY_TIERS},
    telemetry::{
        names,
        traces::{self, trace_span},
    },
};
use tracing::{field::Empty, Instrument};

/// The longest a 429 holds back every API call of its project.
const PROJECT_PAUSE_CAP: Duration = Duration::from_secs(60);

/// What is left of a project's 429 pause is waited out in memory when it is this short: a delay
/// queue would hold the event at least as long (its shortest tier) and cost a round trip.
const WAIT_IN_MEMORY: Duration = RETRY_TIERS[0];

impl Worker {
    /// Processes one message and says how to settle it.
    pub async fn process(&self, message: &Message) -> Settle {
        let attempts = message.attempts();
        let project = match self.projects.of(message) {
            Ok(project) => project.clone(),
            // No key of this worker belongs to it, yet: the receivers and the workers are rolled
            // out one after the other when a project is added. It waits like a failed call, and
            // is dead-lettered (never fetched) once its attempts are spent.
            Err(unknown) => {
                let attempts = attempts + 1;
                if self.policy.gives_up(attempts) {
                    let error = unknown.to_string();
                    return self.dead_letter(message, UNKNOWN_LABEL, attempts, UNKNOWN_PROJECT, &error).await;
                }
                let delay = self.policy.backoff(attempts);
                return self.retry(message, UNKNOWN_LABEL, attempts, delay, UNKNOWN_PROJECT, &unknown).await;
            }
        };
        let span = tracing::Span::current();
        // On every log line of the event and in its trace; a configured name, never a header's.
        span.record("project", project.name.as_str());
        traces::set_attribute(&span, "polyai.project_id", project.client.project_id());
        // Whatever the worker publishes for the event names its project, also when the raw event
        // did not (it belonged to the first project).
        let mut stamped = message.clone();
        stamped.headers.insert(headers::PROJECT.to_owned(), project.name.to_string());
        let message = &stamped;
        let label = project.name.as_str();

        let fields = match Fields::read(&message.body) {
            Ok(fields) => fields,
            Err(error) => return self.dead_letter(message, label, attempts, "unreadable", &error.to_string()).await,
        };
        let conversation_id = match fields.conversation() {
            Ok(id) => id,
            Err(error @ ConversationIdError::Missing) => {
                return self.dead_letter(message, label, attempts, "no_conversation_id", &error.to_string()).await;
            }
            // Never fetched: an id like `..` would change the request's path.
            Err(error) => return self.dead_letter(message, label, attempts, "rejected", &error.to_string()).await,
        };
        let (conversation, audio) = match conversation_id {
            Some(id) => {
                traces::set_attribute(&span, "conversation_id", id);
                if let Some(settle) = self.hold_back_if_stuck(message, &project).await {
                    return settle;
                }
                match self.fetch_with_audio(&project, id, attempts + 1).await {
                    Ok(found) => found,
                    Err(failed) => return self.after_failure(message, &project, attempts, failed).await,
                }
            }
            None => (None, None),
        };
        self.publish_record(message, &project, conversation.as_deref(), audio).await
    }

    /// Holds back an event its project cannot fetch now: the key is refused, or a 429 paused the
    /// project's calls for longer than [`WAIT_IN_MEMORY`]. It waits in a delay queue, attempts
    /// untouched; waiting in memory, it would hold a slot another project's events could use.
    async fn hold_back_if_stuck(&self, message: &Message, project: &Project) -> Option<Settle> {
        let label = project.name.as_str();
        if self.pauses.is_paused(&project.name) {
            let why = format!("held back: the API refuses the key of project {label}");
            return Some(self.hold(message, label, self.auth_probe_interval, "key_refused", &why).await);
        }
        match project.throttle.held_back() {
            Some(left) if left > WAIT_IN_MEMORY => {
                let why = format!("held back: a 429 paused the API calls of project {label}");
                Some(self.hold(message, label, left, "rate_limited", &why).await)
            }
            _ => None,
        }
    }

    /// The conversation and, when audio download is on, its recording. `attempt` counts from 1.
    async fn fetch_with_audio(
        &self,
        project: &Project,
        conversation_id: &str,
        attempt: u32,
    ) -> Result<(Option<Box<RawValue>>, Option<serde_json::Value>), Failed> {
        let conversation_id_owned = || conversation_id.to_owned();
        let conversation = self.fetch(project, conversation_id, attempt).await.map_err(|error| Failed {
            error,
            call: KeyedCall::Conversation { conversation_id: conversation_id_owned() },
        })?;
        let audio = match &self.audio {
            Some(settings) => self
                .save_audio(settings, project, conversation_id, &conversation)
                .instrument(trace_span!("audio"))
                .await
                .map_err(|error| Failed {
                    error,
                    call: KeyedCall::Recording {
                        conversation_id: conversation_id_owned(),
                        request: audio::recording_asked(settings),
                    },
                })?,
            None => None,
        };
        Ok((Some(conversation), audio))
    }

    async fn fetch(&self, project: &Project, conversation_id: &str, attempt: u32) -> Result<Box<RawValue>, ApiError> {
        // The project's turn first, then a call slot: a project waiting for its pace holds no
        // slot another project's call could use.
        project.throttle.acquire().await;
        let _slot = self.api_slots.acquire().await.expect("the semaphore is never closed");
        // After the rate limit and the slot: the span times the API alone.
        let span = trace_span!("fetch", otel.kind = "client", attempt, status = Empty);
        let result = project.client.conversation(conversation_id).instrument(span.clone()).await;
        if result.is_ok() {
            project.throttle.answered();
        }
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(error) => error.status_label(),
        };
        span.record("status", status.as_str());
        let label = project.label();
        self.metrics.record(|| metrics::counter!(names::FETCHES, "project" => label, "status" => status).increment(1));
        let body = result?;
        serde_json::from_slice::<Box<RawValue>>(&body).map_err(|_| ApiError::Server {
            status: 200,
            detail: "the API answered 200 with a body that is not JSON".into(),
        })
    }

    async fn after_failure(&self, message: &Message, project: &Arc<Project>, attempts: u32, failed: Failed) -> Settle {
        let Failed { error, call } = failed;
        let policy = &self.policy;
        let label = project.name.as_str();
        match &error {
            ApiError::RateLimited { retry_after } => {
                // Not the event's fault: the attempt does not count, and the project's calls slow down.
                let project_label = project.label();
                self.metrics.record(|| metrics::counter!(names::RATE_LIMITED, "project" => project_label).increment(1));
                // The project's calls wait, but for a minute at most: its events arriving
                // meanwhile wait in a delay queue (see `hold_back_if_stuck`). This event itself
                // waits its whole Retry-After in a delay queue.
                let delay = match retry_after {
                    Some(wait) => {
                        let delay = policy.rate_limited(*wait);
                        project.throttle.pause(delay.min(PROJECT_PAUSE_CAP));
                        delay
                    }
                    None => {
                        policy.rate_limited(project.throttle.pause_unexplained(policy.base_delay, PROJECT_PAUSE_CAP))
                    }
                };
                self.retry(message, label, attempts, delay, "rate_limited", &error).await
            }
            ApiError::Server { .. } | ApiError::Transport(_) => {
                let attempts = attempts + 1;
                if policy.gives_up(attempts) {
                    return self.dead_letter(message, label, attempts, "attempts_exhausted", &error.to_string()).await;
                }
                self.retry(message, label, attempts, policy.backoff(attempts), "transient", &error).await
            }
            ApiError::NotFound { .. } => {
                // Its own count and pace: after an API outage's 5xx answers, a conversation not
                // yet ingested still gets its minutes of 404 retries. Other failures count these
                // too, so a mix of both still ends.
                let (attempts, not_found) = (attempts + 1, message.not_found_attempts() + 1);
                let mut counted = message.clone();
                counted.headers.insert(headers::NOT_FOUND_ATTEMPTS.to_owned(), not_found.to_string());
                if policy.gives_up_on_not_found(not_found) {
                    return self.dead_letter(&counted, label, attempts, "not_found", &error.to_string()).await;
                }
                self.retry(&counted, label, attempts, policy.not_found_backoff(not_found), "not_found", &error).await
            }
            ApiError::Unauthorized { .. } => {
                // A key problem, not an event problem: the project pauses, the event waits for
                // its key without counting an attempt, and the other projects flow on.
                self.pause_project(project, &error, call);
                let why = format!("held back: {error}");
                self.hold(message, label, self.auth_probe_interval, "key_refused", &why).await
            }
            ApiError::Rejected { .. } => {
                self.dead_letter(message, label, attempts + 1, "rejected", &error.to_string()).await
            }
            // Asking again would get the same answer: over a size cap, or a name no file can have.
            ApiError::Unusable { .. } => {
                self.dead_letter(message, label, attempts + 1, "unusable", &error.to_string()).await
            }
        }
    }
}

/// An API call of an event that failed, and which call it was: a refused key is probed with
/// that same call (see `pause`).
struct Failed {
    error: ApiError,
    call: KeyedCall,
}
