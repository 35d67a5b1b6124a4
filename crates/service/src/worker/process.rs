//! One event through the worker: pick its project, fetch the conversation with that project's
//! client, and choose the outcome ([`super::outcome`] publishes it). Nothing is acked before the
//! broker confirmed whatever replaces it.

use std::{sync::Arc, time::Duration};

use serde_json::value::RawValue;
// tokio's clock, as the throttle's.
use tokio::time::Instant;

use super::{
    audio::Asking,
    outage::{run_over, CallKind, Failing, Verdict},
    outcome::UNKNOWN_PROJECT,
    projects::{Project, UNKNOWN_LABEL},
    throttle::Turn,
    Settle, Worker,
};
use crate::{
    event::{ConversationIdError, Fields},
    polyai::{ApiError, KeyedCall},
    queue::{headers, ledger, Message, RETRY_TIERS},
    telemetry::{
        names,
        traces::{self, trace_span},
    },
    wall_clock::unix_millis,
};
use tracing::{field::Empty, Instrument};

/// The longest a 429 holds back every API call of its project.
const PROJECT_PAUSE_CAP: Duration = Duration::from_secs(60);

/// What is left of a project's 429 pause, or of the time to an event's turn under
/// `RELAY_API_RATE`, is waited out in memory when it is this short: a delay queue would hold the
/// event at least as long (its shortest tier) and cost a round trip.
pub(super) const WAIT_IN_MEMORY: Duration = RETRY_TIERS[0];

/// A reserved turn is believed this far ahead at most: one further (a header set by hand, a
/// clock far off) is brought back to this, so that its event waits a week at most, never for
/// ever, an hour at a time, counting no attempt.
const FURTHEST_TURN: Duration = Duration::from_secs(7 * 86_400);

impl Worker {
    /// Processes one message and says how to settle it.
    pub async fn process(&self, message: &Message) -> Settle {
        let attempts = message.attempts();
        let project = match self.projects.of(message) {
            Ok(project) => project.clone(),
            // No key of this worker belongs to it, yet: the receivers and the workers are rolled
            // out one after the other when a project is added. It is retried as a failed call,
            // every try counted, and is dead-lettered (never fetched) once its attempts are spent.
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
                let turn = match self.turn_or_hold(message, &project).await {
                    Ok(turn) => turn,
                    Err(settle) => return settle,
                };
                let call_ended = ledger::ends_a_call(&message.event_type);
                let recording_failing = Failing::of(message).of_kind(CallKind::Recording);
                match self.fetch_with_audio(&project, id, attempts + 1, call_ended, recording_failing, turn).await {
                    Ok(found) => found,
                    Err(Stopped::Failed(failed)) => {
                        // Asked for first, the recording was answered: its run is over, and the
                        // conversation's failure is judged as any (and the next try goes in the
                        // usual order).
                        let mut answered = message.clone();
                        if recording_failing && CallKind::from(&failed.call) == CallKind::Conversation {
                            run_over(&mut answered, Some(CallKind::Recording));
                        }
                        return self.after_failure(&answered, &project, attempts, failed).await;
                    }
                    Err(Stopped::TurnPassed(wait)) => return self.hold_for_a_new_turn(message, &project, wait).await,
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
        let (delay, reason, why, ends) = if self.pauses.is_paused(&project.name) {
            let why = format!("held back: the API refuses the key of project {label}");
            (self.auth_probe_interval, "key_refused", why, None)
        } else {
            match project.throttle.held_back() {
                Some(left) if left > WAIT_IN_MEMORY => {
                    let why = format!("held back: a 429 paused the API calls of project {label}");
                    (left, "rate_limited", why, project.throttle.paused_until())
                }
                _ => return None,
            }
        };
        // A turn the event had under RELAY_API_RATE that passes while it waits (a key refused
        // for who knows how long, or a 429's pause that covers it) is given up: it takes a new
        // one when it comes back, rather than go at once with every other whose turn passed.
        // One after the pause's end is kept.
        let (now, clock) = (Instant::now(), unix_millis());
        let due = reserved_turn(message.header(headers::TURN), clock);
        let kept = match (due, ends) {
            (Some(due), Some(ends)) => now + Duration::from_millis(due.saturating_sub(clock)) > ends,
            _ => false,
        };
        let mut held = message.clone();
        if due.is_some() && !kept {
            held.headers.remove(headers::TURN);
        }
        // The API answered the project (a 429, a refused key): whatever failed before is not
        // an outage still going on.
        run_over(&mut held, None);
        Some(self.hold(&held, label, delay, reason, &why).await)
    }

    /// The turn of the event's API calls under `RELAY_API_RATE`; or, settled, the event held back
    /// in a delay queue until that turn, when it is further than [`WAIT_IN_MEMORY`] away.
    ///
    /// Waiting in memory, a backlog of one project (a reconciliation pass, a replay) would fill
    /// every in-progress slot with events waiting their turns, and the other projects' events
    /// would wait behind them at that project's pace. So the turns are reserved on the project's
    /// schedule (two when recordings are fetched: the conversation's and the recording's), the
    /// time they are due goes with the event in a header, and the event waits in a delay queue:
    /// an event arriving later gets a later turn, and one that comes back before its turn (the
    /// longest delay queue is an hour) waits again, reserving nothing more. One that comes back
    /// once its turn has come goes, on whichever worker takes it: each turn reserved is one call.
    /// A late one goes too, however late: one given a new turn instead would be late again for as
    /// long as the worker's queue keeps it waiting (a busy worker), and never go. So turns that
    /// passed while their events waited (the worker stopped, its queue behind) go together; a
    /// 429 they meet pauses the project as any does.
    async fn turn_or_hold(&self, message: &Message, project: &Project) -> Result<Turn, Settle> {
        if project.throttle.interval().is_none() {
            return Ok(Turn::Next);
        }
        let calls = if self.audio.is_some() { 2 } else { 1 };
        let now = Instant::now();
        let clock = unix_millis();
        let (due, left) = match reserved_turn(message.header(headers::TURN), clock) {
            Some(due) => {
                let left = Duration::from_millis(due.saturating_sub(clock));
                project.throttle.reserved_elsewhere(now + left, calls);
                (due, left)
            }
            None => {
                let first = project.throttle.reserve(calls).unwrap_or(now);
                let left = first.saturating_duration_since(now);
                (clock + left.as_millis() as u64, left)
            }
        };
        if left <= WAIT_IN_MEMORY {
            return Ok(Turn::At(now + left));
        }
        let label = project.name.as_str();
        let mut paced = message.clone();
        paced.headers.insert(headers::TURN.to_owned(), due.to_string());
        let why = format!("held back: RELAY_API_RATE spaces the API calls of project {label}");
        Err(self.hold(&paced, label, longest_tier_within(left), "paced", &why).await)
    }

    /// A 429's pause holds one of the event's calls `wait` away: it passed the call's turn and the
    /// next one is behind the turns of the project's backlog, or it began after the event last
    /// looked. The event waits in a delay queue, counting no attempt, and takes a new turn when
    /// it comes back.
    async fn hold_for_a_new_turn(&self, message: &Message, project: &Project, wait: Duration) -> Settle {
        let label = project.name.as_str();
        let why = format!("held back: a 429 paused the API calls of project {label}");
        let mut held = message.clone();
        held.headers.remove(headers::TURN);
        run_over(&mut held, None);
        self.hold(&held, label, longest_tier_within(wait), "rate_limited", &why).await
    }

    /// The conversation and, when audio download is on, its recording. `attempt` counts from 1;
    /// `call_ended`: the event says the call has ended; `recording_failing`: the event is in a run
    /// of failures of its recording (its conversation was served, and its recording asked for).
    async fn fetch_with_audio(
        &self,
        project: &Project,
        conversation_id: &str,
        attempt: u32,
        call_ended: bool,
        recording_failing: bool,
        turn: Turn,
    ) -> Result<(Option<Box<RawValue>>, Option<serde_json::Value>), Stopped> {
        let next_turn = match turn {
            Turn::At(at) => Turn::At(at + project.throttle.interval().unwrap_or_default()),
            Turn::Next => Turn::Next,
        };
        let (conversation, audio) = match &self.audio {
            // The recording first: while recordings fail, each wait asks for it alone, and the
            // conversation, served before, is not fetched again (up to about 150 times a day)
            // until the recording is saved. It is fetched after, for the record.
            Some(settings) if recording_failing => {
                let audio = self
                    .save_recording(settings, project, conversation_id, turn)
                    .instrument(trace_span!("audio"))
                    .await?;
                let conversation = self.fetch_conversation(project, conversation_id, attempt, next_turn).await?;
                // The record says what the conversation it carries says: one that now says
                // the call is still going (or a chat) gets the usual word, not the recording.
                let audio = match Asking::for_conversation(&conversation, call_ended) {
                    Asking::Ask => audio,
                    Asking::Skip(instead) => instead,
                };
                (conversation, audio)
            }
            audio => {
                let conversation = self.fetch_conversation(project, conversation_id, attempt, turn).await?;
                let audio = match audio {
                    Some(settings) => {
                        self.save_audio(settings, project, conversation_id, &conversation, call_ended, next_turn)
                            .instrument(trace_span!("audio"))
                            .await?
                    }
                    None => None,
                };
                (conversation, audio)
            }
        };
        // Only now: a 429 to the second call after the first was served is one more in the
        // project's row of 429s, not the first of a new one.
        project.throttle.answered();
        Ok((Some(conversation), audio))
    }

    /// The conversation, on the project's `turn`.
    async fn fetch_conversation(
        &self,
        project: &Project,
        conversation_id: &str,
        attempt: u32,
        turn: Turn,
    ) -> Result<Box<RawValue>, Stopped> {
        // The project's turn first, then a call slot: a project waiting for its pace holds no
        // slot another project's call could use.
        project.throttle.take(turn, WAIT_IN_MEMORY).await.map_err(Stopped::TurnPassed)?;
        let conversation = self.fetch(project, conversation_id, attempt).await.map_err(|error| Failed {
            error,
            call: KeyedCall::Conversation { conversation_id: conversation_id.to_owned() },
        })?;
        Ok(conversation)
    }

    async fn fetch(&self, project: &Project, conversation_id: &str, attempt: u32) -> Result<Box<RawValue>, ApiError> {
        let _slot = self.api_slots.acquire().await.expect("the semaphore is never closed");
        // After the rate limit and the slot: the span times the API alone.
        let span = trace_span!("fetch", otel.kind = "client", attempt, status = Empty);
        let result = project.client.conversation(conversation_id).instrument(span.clone()).await;
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(error) => error.status_label(),
        };
        span.record("status", status.as_str());
        let label = project.label();
        self.metrics.record(|| metrics::counter!(names::FETCHES, "project" => label, "status" => status).increment(1));
        let conversation = result.and_then(|body| {
            serde_json::from_slice::<Box<RawValue>>(&body).map_err(|_| ApiError::Server {
                status: 200,
                detail: "the API answered 200 with a body that is not JSON".into(),
            })
        });
        // Once read through: a body cut short, or a page no API sends, is no answer.
        project.answered.note(CallKind::Conversation, &conversation, unix_millis());
        conversation
    }

    async fn after_failure(&self, message: &Message, project: &Arc<Project>, attempts: u32, failed: Failed) -> Settle {
        let Failed { error, call } = failed;
        let kind = CallKind::from(&call);
        let policy = &self.policy;
        let label = project.name.as_str();
        match &error {
            ApiError::RateLimited { retry_after } => {
                // Not the event's fault: the attempt does not count, and the project's calls slow down.
                let project_label = project.label();
                self.metrics.record(|| metrics::counter!(names::RATE_LIMITED, "project" => project_label).increment(1));
                // The project's calls wait, but for a minute at most: its events arriving
                // meanwhile wait in a delay queue (see `hold_back_if_stuck`). This event itself
                // waits its whole Retry-After in a delay queue, or the project's pause if that
                // is longer (429s in a row).
                let paused = project.throttle.pause_after_429(*retry_after, policy.base_delay, PROJECT_PAUSE_CAP);
                let delay = policy.rate_limited(retry_after.map_or(paused, |asked| asked.max(paused)));
                let mut answered = message.clone();
                run_over(&mut answered, Some(kind));
                self.retry(&answered, label, attempts, delay, "rate_limited", &error).await
            }
            ApiError::Server { .. } | ApiError::Transport(_) => {
                let now = unix_millis();
                let judged = Failing::of(message).judge(kind, |at| project.answered.since(kind, at), policy, now);
                let stamped = judged.stamped(message, now);
                match judged.verdict {
                    Verdict::Counts => {
                        let attempts = attempts + 1;
                        if policy.gives_up(attempts) {
                            let error = error.to_string();
                            return self.dead_letter(&stamped, label, attempts, "attempts_exhausted", &error).await;
                        }
                        self.retry(&stamped, label, attempts, policy.backoff(attempts), "transient", &error).await
                    }
                    // The API answered none of the project's calls of this kind since the event's
                    // last failure. Said once a while per project, not per event: an outage holds
                    // every event of the project.
                    Verdict::WaitsOut(wait) => {
                        let why = format!("waiting out the API: {error}");
                        // Its calls' turns were taken: it takes new ones when it comes back.
                        let mut held = stamped;
                        held.headers.remove(headers::TURN);
                        let settle = self.hold(&held, label, wait, "api_down", &why).await;
                        if settle == Settle::Ack {
                            if let Some(unsaid) = project.outage_log.admit(kind.as_str()) {
                                tracing::warn!(project = %project.name, calls = kind.as_str(), %error, unsaid, "the API answers none of the project's calls of this kind; its events wait for it, counting no attempt");
                            }
                        }
                        settle
                    }
                }
            }
            ApiError::NotFound { .. } => {
                // Its own count and pace: after an API outage's 5xx answers, a conversation not
                // yet ingested still gets its minutes of 404 retries. Other failures count these
                // too, so a mix of both still ends.
                let (attempts, not_found) = (attempts + 1, message.not_found_attempts() + 1);
                let mut counted = message.clone();
                counted.headers.insert(headers::NOT_FOUND_ATTEMPTS.to_owned(), not_found.to_string());
                run_over(&mut counted, Some(kind));
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
                // Its calls' turns were taken: once the key works it takes new ones.
                let mut held = message.clone();
                held.headers.remove(headers::TURN);
                run_over(&mut held, Some(kind));
                self.hold(&held, label, self.auth_probe_interval, "key_refused", &why).await
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

/// The longest delay queue's wait that does not pass `wait`, as a held event's whole wait:
/// held events then wait as long as any message in their delay queue, so none is held behind
/// one due later (a queue expires messages at its head only). The rest of the wait is another hop.
fn longest_tier_within(wait: Duration) -> Duration {
    RETRY_TIERS.iter().copied().filter(|tier| *tier <= wait).max().unwrap_or(WAIT_IN_MEMORY)
}

/// Why an event's calls stopped short of its record.
pub(super) enum Stopped {
    Failed(Failed),
    /// A 429's pause passed a call's turn, and the next one is this far off: too far to wait
    /// in memory (see [`super::throttle::Throttle::wait_for`]).
    TurnPassed(Duration),
}

impl From<Failed> for Stopped {
    fn from(failed: Failed) -> Self {
        Self::Failed(failed)
    }
}

/// An API call of an event that failed, and which call it was: a refused key is probed with
/// that same call (see `pause`).
pub(super) struct Failed {
    pub(super) error: ApiError,
    pub(super) call: KeyedCall,
}

/// When an event's reserved turn is due, unix ms, from its header: none when it has none or it
/// is unreadable, and at most [`FURTHEST_TURN`] after `clock`.
fn reserved_turn(header: Option<&str>, clock: u64) -> Option<u64> {
    let due = header?.trim().parse::<u64>().ok()?;
    Some(due.min(clock.saturating_add(FURTHEST_TURN.as_millis() as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_turn_is_believed_up_to_a_week_ahead_and_however_late() {
        let clock = 1_800_000_000_000;
        let week = FURTHEST_TURN.as_millis() as u64;
        assert_eq!(reserved_turn(Some("1800000005000"), clock), Some(1_800_000_005_000));
        assert_eq!(reserved_turn(Some("1"), clock), Some(1), "late, however late: it goes");
        assert_eq!(reserved_turn(Some(&(clock + week).to_string()), clock), Some(clock + week));
        assert_eq!(reserved_turn(Some(&(clock + week + 1).to_string()), clock), Some(clock + week), "a week at most");
        assert_eq!(reserved_turn(Some(&u64::MAX.to_string()), clock), Some(clock + week));
        assert_eq!(reserved_turn(Some("soon"), clock), None);
        assert_eq!(reserved_turn(None, clock), None);
    }
}
