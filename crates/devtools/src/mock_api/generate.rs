//! Deterministic sample conversations in the Conversations API v3 shape (polyai-api.md §3.2):
//! the same seed and window give the same data, conversation for conversation.

use std::{collections::BTreeMap, time::Duration};

use serde::{Serialize, Serializer};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    prng::{fnv1a, SplitMix},
    script::{Line, GREETING, HANDOFFS, TOPICS, VARIANTS},
};

/// The topic whose calls end in a handoff to reception.
const HANDOFF_TOPIC: usize = 3;
/// In-progress conversations started within this long before the window's end.
const IN_PROGRESS_MAX_AGE: u64 = 900;

/// A conversation as `GET /v3/{account}/{project}/conversations[/{id}]` returns it (snake_case).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    /// `CA` + 32 hex digits.
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    pub variant_id: String,
    pub variant_name: String,
    /// `live`, `sandbox` or `pre-release` (what `client_env` filters on).
    pub environment: String,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: OffsetDateTime,
    /// `VOICE-SIP`, `WEBCHAT` or `CHAT`; only voice has recordings.
    pub channel: String,
    pub from_number: String,
    pub to_number: String,
    pub in_progress: bool,
    pub num_turns: u32,
    /// Seconds.
    pub total_duration: u32,
    /// Seconds with the agent (shorter than `total_duration` after a handoff).
    pub polyai_duration: u32,
    pub handoff: bool,
    pub handoff_reason: String,
    pub handoff_destination: String,
    pub num_silences: u32,
    pub num_ood: u32,
    pub metrics: BTreeMap<String, String>,
    pub state: BTreeMap<String, String>,
    /// Empty with `num_turns > 0` when the project's transcript setting is off.
    pub turns: Vec<Turn>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    pub user_input: String,
    pub user_input_dtmf: String,
    #[serde(serialize_with = "rfc3339")]
    pub user_input_datetime: OffsetDateTime,
    pub barge_in: bool,
    pub agent_response: String,
    #[serde(serialize_with = "rfc3339")]
    pub agent_response_datetime: OffsetDateTime,
    /// Seconds.
    pub latency: f64,
    pub intents: Vec<String>,
    pub entities: Vec<BTreeMap<String, String>>,
    pub is_ood: bool,
    pub is_silence: bool,
    pub translated_user_input: String,
    pub english_agent_response: String,
}

impl Conversation {
    pub fn is_voice(&self) -> bool {
        self.channel.starts_with("VOICE")
    }

    /// A recording exists once a voice call has ended.
    pub fn has_recording(&self) -> bool {
        self.is_voice() && !self.in_progress
    }

    /// The case the relay flags with `transcript_visible: false`.
    pub fn transcript_hidden(&self) -> bool {
        self.num_turns > 0 && self.turns.is_empty()
    }

    pub fn finished_at(&self) -> Option<OffsetDateTime> {
        (!self.in_progress).then(|| self.started_at + Duration::from_secs(self.total_duration.into()))
    }
}

/// RFC 3339 in UTC, the form of the docs' examples (`2026-11-20T09:14:03Z`).
pub fn format_time(time: OffsetDateTime) -> String {
    // Formatting fails only for years beyond 9999, which no generated time reaches.
    time.format(&Rfc3339).unwrap_or_default()
}

fn rfc3339<S: Serializer>(time: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_time(*time))
}

/// Where generated data lives: one account and project, `count` conversations ending at `window_end`.
pub struct Plan<'a> {
    pub seed: u64,
    pub count: usize,
    pub window: Duration,
    pub window_end: OffsetDateTime,
    pub account_id: &'a str,
    pub project_id: &'a str,
}

/// The seed of a tenant other than the primary one: the mock's seed mixed with its account and
/// project, so each project's conversations (and their 128-bit ids) are its own, and the same
/// settings still serve the same data.
pub fn tenant_seed(seed: u64, account_id: &str, project_id: &str) -> u64 {
    seed ^ fnv1a(format!("{account_id}/{project_id}").as_bytes())
}

/// All conversations, newest first (ties by id): the order the list endpoint pages through.
pub fn conversations(plan: &Plan<'_>) -> Vec<Conversation> {
    let mut all: Vec<Conversation> = (0..plan.count as u64).map(|index| conversation(plan, index)).collect();
    all.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| a.id.cmp(&b.id)));
    all
}

fn conversation(plan: &Plan<'_>, index: u64) -> Conversation {
    let mut rng = SplitMix::stream(plan.seed, index);
    let id = format!("CA{}", rng.hex(32));
    let channel = match rng.below(100) {
        0..80 => "VOICE-SIP",
        80..95 => "WEBCHAT",
        _ => "CHAT",
    };
    let environment = match rng.below(100) {
        0..85 => "live",
        85..95 => "sandbox",
        _ => "pre-release",
    };
    let (variant_id, variant_name) = *rng.pick(VARIANTS);
    let in_progress = rng.chance(0.04);
    let topic_index = rng.below(TOPICS.len() as u64) as usize;
    let topic = TOPICS[topic_index];
    let handoff = !in_progress && (topic_index == HANDOFF_TOPIC || rng.chance(0.05));
    let lines = if in_progress { rng.between(0, 1) } else { rng.between(1, topic.len() as u64 + 1) } as usize;

    // Offsets of each turn from the start first; the start itself depends on the total length.
    let mut offsets = Vec::with_capacity(lines + 1);
    let mut elapsed = 0u64;
    for _ in 0..=lines {
        offsets.push(elapsed);
        elapsed += rng.between(4, 15);
    }
    let polyai_duration = elapsed + rng.between(2, 10);
    let total_duration = if handoff { polyai_duration + rng.between(30, 300) } else { polyai_duration };
    let window = plan.window.as_secs().max(1);
    let age = if in_progress {
        rng.between(total_duration, IN_PROGRESS_MAX_AGE.max(total_duration)).min(window)
    } else if window > total_duration {
        rng.between(total_duration, window)
    } else {
        rng.between(1, window)
    };
    let started_at = plan.window_end - Duration::from_secs(age);

    let script = std::iter::once(&GREETING).chain(topic.iter().cycle()).take(lines + 1);
    let mut turns: Vec<Turn> =
        script.zip(&offsets).map(|(line, offset)| turn(&mut rng, line, started_at, *offset)).collect();
    let num_turns = turns.len() as u32;
    if !in_progress && rng.chance(0.08) {
        turns.clear();
    }
    let (handoff_reason, handoff_destination) = if handoff { *rng.pick(HANDOFFS) } else { ("", "") };
    let voice = channel.starts_with("VOICE");
    let booked = topic_index == 0 && lines >= topic.len();
    let session_key = if voice { "call_sid" } else { "session_id" };
    Conversation {
        id,
        account_id: plan.account_id.to_owned(),
        project_id: plan.project_id.to_owned(),
        variant_id: variant_id.to_owned(),
        variant_name: variant_name.to_owned(),
        environment: environment.to_owned(),
        started_at,
        channel: channel.to_owned(),
        // Ofcom's drama range: numbers that can never reach a real phone.
        from_number: if voice { format!("+447700900{:03}", rng.below(1000)) } else { String::new() },
        to_number: if voice { "+442071234567".to_owned() } else { String::new() },
        in_progress,
        num_turns,
        total_duration: total_duration as u32,
        polyai_duration: polyai_duration as u32,
        handoff,
        handoff_reason: handoff_reason.to_owned(),
        handoff_destination: handoff_destination.to_owned(),
        num_silences: u32::from(rng.chance(0.1)),
        num_ood: u32::from(rng.chance(0.05)),
        metrics: BTreeMap::from([("booking_made".to_owned(), booked.to_string())]),
        state: BTreeMap::from([(session_key.to_owned(), format!("CA{}", rng.hex(32)))]),
        turns,
    }
}

fn turn(rng: &mut SplitMix, line: &Line, started_at: OffsetDateTime, offset: u64) -> Turn {
    let said = started_at + Duration::from_secs(offset);
    Turn {
        user_input: line.user.to_owned(),
        user_input_dtmf: String::new(),
        user_input_datetime: said,
        barge_in: rng.chance(0.05),
        agent_response: line.agent.to_owned(),
        agent_response_datetime: said + Duration::from_secs(1),
        latency: rng.between(15, 90) as f64 / 100.0,
        intents: line.intent.map(str::to_owned).into_iter().collect(),
        entities: line.entities.iter().map(|(k, v)| BTreeMap::from([((*k).to_owned(), (*v).to_owned())])).collect(),
        is_ood: false,
        is_silence: false,
        translated_user_input: String::new(),
        english_agent_response: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, count: usize) -> Plan<'static> {
        Plan {
            seed,
            count,
            window: Duration::from_secs(86_400),
            window_end: OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap(),
            account_id: "ws-test",
            project_id: "PROJECT-TEST",
        }
    }

    #[test]
    fn the_same_seed_generates_the_same_conversations() {
        assert_eq!(conversations(&plan(1, 50)), conversations(&plan(1, 50)));
        assert_ne!(conversations(&plan(1, 50)), conversations(&plan(2, 50)));
    }

    #[test]
    fn conversations_fall_inside_the_window_and_ids_look_like_polyai_ones() {
        let p = plan(3, 300);
        for c in conversations(&p) {
            assert!(c.started_at < p.window_end && c.started_at >= p.window_end - p.window, "{}", c.id);
            assert_eq!(c.id.len(), 34);
            assert!(c.id.starts_with("CA") && c.id[2..].bytes().all(|b| b.is_ascii_hexdigit()));
            if let Some(end) = c.finished_at() {
                assert!(end <= p.window_end, "{} finished after the window", c.id);
            }
        }
    }

    #[test]
    fn the_mix_has_every_case_the_relay_handles() {
        let all = conversations(&plan(4, 300));
        let count = |f: &dyn Fn(&Conversation) -> bool| all.iter().filter(|c| f(c)).count();
        assert!(count(&|c| c.channel == "VOICE-SIP") > 150);
        assert!(count(&|c| c.channel == "WEBCHAT") > 10);
        assert!(count(&|c| c.environment == "sandbox") > 5);
        assert!(count(&|c| c.in_progress) > 0);
        assert!(count(&|c| c.transcript_hidden()) > 0);
        assert!(count(&|c| c.handoff && !c.handoff_reason.is_empty() && !c.handoff_destination.is_empty()) > 10);
    }
}
