//! Backfill: page the v3 list endpoint over a time window and publish every finished
//! conversation as an enriched record, for calls the webhooks missed (an outage longer than
//! PolyAI's retry window, a relay set up after the fact).

mod checkpoint;
mod pages;
mod progress;
mod window;

use std::{collections::HashSet, path::PathBuf, time::Duration};

use serde_json::{json, value::RawValue};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_util::sync::CancellationToken;

use self::pages::Pager;
pub use self::{
    checkpoint::{BackfillKey, Checkpoint, CheckpointFile},
    progress::Progress,
    window::{UnreadableWindow, Window},
};
use crate::{
    config::ProjectName,
    polyai::{PolyaiClient, SettingNames, Summary},
    queue::{headers, publish_until_confirmed, Destination, Message, PublishError, Publisher},
    worker::record::{transcript_visible, EnrichedRecord, SCHEMA},
};

/// The event type of backfilled records, so consumers can tell them from live ones.
pub const EVENT_TYPE: &str = "conversation.backfilled";
/// How long one record may wait for the broker through an outage before the run stops (resumable).
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);

pub struct BackfillConfig {
    pub key: BackfillKey,
    pub start_time: OffsetDateTime,
    pub end_time: OffsetDateTime,
    pub page_size: u32,
    /// List and count; publish nothing.
    pub dry_run: bool,
    /// First wait after a transient list failure; doubles each time.
    pub retry_base_delay: Duration,
    pub checkpoint: PathBuf,
    /// At the end, keep the checkpoint marked finished instead of removing it: one project of a
    /// run over several, whose checkpoints go only once every project is done.
    pub keep_finished: bool,
    /// How a failure's advice names the settings: the variables, or the project's fields.
    pub setting_names: SettingNames,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackfillSummary {
    pub pages: u64,
    pub seen: u64,
    pub published: u64,
    pub skipped_in_progress: u64,
    /// Listed twice in this run (pages shifting under new calls): published once.
    pub duplicates: u64,
    /// Conversations of this run whose record is over the broker's limit
    /// (`RELAY_BROKER_MAX_MESSAGE`): not published, each named in a note.
    pub too_large: Vec<String>,
    /// A checkpoint of an earlier run with the same arguments was found: `earlier` is its window.
    pub resumed: bool,
    /// An earlier run finished `earlier` already (its checkpoint was kept): none of it was listed.
    pub finished_earlier: bool,
    /// The window of the earlier run's checkpoint, resumed or finished.
    pub earlier: Option<Window>,
    /// What the window asked for now adds past `earlier`'s end, listed after it.
    pub then: Option<Window>,
}

/// The event id of a backfilled conversation: stable, so a re-run dedupes downstream.
pub fn event_id(conversation_id: &str) -> String {
    format!("backfill:{conversation_id}")
}

fn text(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

/// Runs (or resumes) the backfill. `publisher` is `None` for a dry run.
///
/// A checkpoint of the same arguments is an earlier run's window: the run resumes it (or finds
/// it finished), then lists what the window asked for now adds past its end (see [`Window`]),
/// so a re-run covers the window asked for now without redoing what is done.
pub async fn run(
    config: &BackfillConfig,
    client: &PolyaiClient,
    publisher: Option<&dyn Publisher>,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> anyhow::Result<BackfillSummary> {
    let file = CheckpointFile::new(config.checkpoint.clone());
    let asked = Window { start: config.start_time, end: config.end_time };
    let mut summary = BackfillSummary::default();
    // A dry run neither resumes nor touches a real run's checkpoint.
    let saved = if config.dry_run { None } else { file.load()? };
    let (mut state, then) = match saved {
        Some(saved) if saved.key == config.key => {
            let earlier = Window::of(&saved)?;
            if saved.finished {
                progress.note(&format!("{earlier} was finished by an earlier run ({})", file.path().display()));
            } else {
                progress.note(&format!(
                    "resuming {earlier} of an earlier run from {} (page {})",
                    file.path().display(),
                    saved.pages + 1
                ));
            }
            summary.resumed = true;
            summary.finished_earlier = saved.finished;
            summary.earlier = Some(earlier);
            (saved, earlier.beyond(asked))
        }
        // A finished backfill of other arguments has nothing left to resume.
        Some(saved) if saved.finished => (new_checkpoint(config, asked), None),
        Some(_) => anyhow::bail!(
            "{} belongs to a backfill with other arguments: finish that one (same --since/--until/--client-env) or delete the file",
            file.path().display()
        ),
        None => (new_checkpoint(config, asked), None),
    };
    let pager = Pager { config, client, publisher, progress, shutdown, file: &file };
    let mut published_now = HashSet::new();
    if !state.finished {
        pager.to_end(&mut state, &mut summary, &mut published_now).await?;
    }
    if let Some(then) = then {
        // A window of its own rather than a longer end for the saved one: a cursor belongs to
        // the query it came from. Saved at once, so that an interruption resumes this window.
        progress.note(&format!(
            "then listing {then}, the part of the window asked for now past the earlier one ({})",
            file.path().display()
        ));
        state = Checkpoint {
            start_time: text(then.start),
            end_time: text(then.end),
            cursor: None,
            offset: None,
            finished: false,
            ..state
        };
        if !config.dry_run {
            file.save(&state)?;
        }
        summary.then = Some(then);
        pager.to_end(&mut state, &mut summary, &mut published_now).await?;
    }
    match (config.dry_run, config.keep_finished) {
        (true, _) => {}
        (false, true) => {
            state.finished = true;
            file.save(&state)?;
        }
        (false, false) => file.remove()?,
    }
    summary.pages = state.pages;
    summary.published = state.published;
    summary.skipped_in_progress = state.skipped_in_progress;
    Ok(summary)
}

/// The checkpoint of a backfill that has not listed anything yet.
fn new_checkpoint(config: &BackfillConfig, window: Window) -> Checkpoint {
    Checkpoint {
        key: config.key.clone(),
        start_time: text(window.start),
        end_time: text(window.end),
        cursor: None,
        offset: None,
        pages: 0,
        published: 0,
        skipped_in_progress: 0,
        finished: false,
    }
}

/// Publishes one conversation as a backfilled record, waiting out a broker outage for a while.
/// `Ok(Err(_))`: its record is over the broker's limit. Every run would build the same record, so
/// the conversation is left out and the rest of the window goes on, rather than the run stopping
/// at it again on each resume.
async fn publish(
    publisher: &dyn Publisher,
    project: &ProjectName,
    conversation: &Summary,
    shutdown: &CancellationToken,
) -> anyhow::Result<Result<(), PublishError>> {
    let event = json!({"type": EVENT_TYPE, "data": {"conversation_id": conversation.id}}).to_string();
    let event = RawValue::from_string(event)?;
    let now = OffsetDateTime::now_utc();
    let id = event_id(&conversation.id);
    let record = EnrichedRecord {
        schema: SCHEMA,
        event_id: &id,
        event_type: EVENT_TYPE,
        project: project.as_str(),
        received_at: None,
        fetched_at: text(now),
        event: &event,
        conversation: Some(&conversation.raw),
        transcript_visible: transcript_visible(&conversation.raw),
        audio: None,
    };
    let message = Message {
        body: serde_json::to_vec(&record)?.into(),
        message_id: id.clone(),
        event_type: EVENT_TYPE.to_owned(),
        timestamp: now.unix_timestamp().max(0) as u64,
        headers: [(headers::RECEIVED_AT.to_owned(), text(now)), (headers::PROJECT.to_owned(), project.to_string())]
            .into(),
    };
    match publish_until_confirmed(publisher, Destination::Conversations, &message, PUBLISH_PATIENCE, shutdown).await {
        Ok(()) => Ok(Ok(())),
        Err(error @ PublishError::TooLarge { .. }) => Ok(Err(error)),
        Err(error) => Err(anyhow::anyhow!("publishing {id} failed: {error}; the run can be resumed")),
    }
}
