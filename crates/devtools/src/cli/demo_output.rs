//! What the demo prints: each enriched record (and each dead letter) as it lands in the
//! embedded queue's files, one line each, naming its project.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use polyai_relay::{
    cli::stdout,
    queue::{
        embedded::{EmbeddedQueue, CONVERSATIONS_FILE},
        headers,
    },
};

/// Which demo project each conversation belongs to, by conversation id: the project of a record
/// that does not say (records name their project in a top-level `project` field).
pub type Owners = HashMap<String, String>;

/// The project of an enriched record: its `project` field, else the owner of its conversation.
pub fn project_of<'a>(record: &'a Value, owners: &'a Owners) -> &'a str {
    record["project"]
        .as_str()
        .or_else(|| record["conversation"]["id"].as_str().and_then(|id| owners.get(id)).map(String::as_str))
        .unwrap_or("?")
}

/// What has landed so far: records by project, and dead letters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub records: BTreeMap<String, usize>,
    pub dead: usize,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.records.values().sum::<usize>() + self.dead
    }

    /// `acme-uk 8, acme-us 8`.
    pub fn by_project(&self) -> String {
        self.records.iter().map(|(project, n)| format!("{project} {n}")).collect::<Vec<_>>().join(", ")
    }
}

/// The records and dead letters in `dir` (complete lines only: the last may be half-written).
fn read(dir: &Path) -> (Vec<Value>, Vec<String>) {
    // Bytes, not text: a line torn inside a character must not hide every other record.
    let bytes = std::fs::read(dir.join(CONVERSATIONS_FILE)).unwrap_or_default();
    let records = bytes
        .split_inclusive(|byte| *byte == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .map(|line| serde_json::from_slice(line).unwrap_or(Value::Null))
        .collect();
    let dead = EmbeddedQueue::dead_letters_in(dir)
        .unwrap_or_default()
        .iter()
        .map(|line| {
            let header = |name: &str| line.message.headers.get(name).map(String::as_str).unwrap_or("?");
            let error: String = header(headers::ERROR).chars().take(100).collect();
            format!("{:<8} dead       {}  {error}", header(headers::PROJECT), line.message.message_id)
        })
        .collect();
    (records, dead)
}

/// Prints each new record and dead letter in `dir` as one line, until `shutdown`: the files are
/// read each time the embedded queue has `written` to them. How many lines it has printed goes
/// to `shown`.
pub async fn print(
    dir: PathBuf,
    mut written: watch::Receiver<u64>,
    owners: Owners,
    shown: watch::Sender<usize>,
    shutdown: CancellationToken,
) {
    let (mut records_shown, mut dead_shown) = (0, 0);
    loop {
        // Marked seen before the files are read, so a write during the read wakes the next wait.
        written.borrow_and_update();
        let (records, dead) = read(&dir);
        for record in records.iter().skip(records_shown) {
            stdout::line(format_args!("{:<8} {}", project_of(record, &owners), describe(record)));
        }
        for line in dead.iter().skip(dead_shown) {
            stdout::line(format_args!("{line}"));
        }
        (records_shown, dead_shown) = (records.len(), dead.len());
        shown.send_replace(records_shown + dead_shown);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = written.changed() => if changed.is_err() { return },
        }
    }
}

/// Waits until the printer has `shown` `expected` events, as records or dead letters, so the
/// summary comes after the last of them; then tallies them (Ctrl-C, or a printer gone: `None`).
pub async fn wait_for(
    dir: &Path,
    mut shown: watch::Receiver<usize>,
    expected: usize,
    owners: &Owners,
    shutdown: &CancellationToken,
) -> Option<Tally> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        landed = shown.wait_for(|shown| *shown >= expected) => match landed {
            // Let go of the watch before the files are read: the printer may write to it meanwhile.
            Ok(shown) => {
                drop(shown);
                Some(tally(dir, owners))
            }
            Err(_) => None,
        },
    }
}

/// What has landed in `dir`, by project.
fn tally(dir: &Path, owners: &Owners) -> Tally {
    let (records, dead) = read(dir);
    let mut tally = Tally { dead: dead.len(), ..Tally::default() };
    for record in &records {
        *tally.records.entry(project_of(record, owners).to_owned()).or_default() += 1;
    }
    tally
}

/// One line about an enriched record: what happened on the call, in a glance.
pub fn describe(record: &Value) -> String {
    let conversation = &record["conversation"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let id = text(&conversation["id"]);
    let short_id: String = id.chars().take(12).collect();
    let channel = text(&conversation["channel"]);
    let seconds = conversation["total_duration"].as_u64().unwrap_or(0);
    let turns = conversation["num_turns"].as_u64().unwrap_or(0);
    match record["event_type"].as_str() {
        Some("handoff.created") => format!(
            "handoff    {short_id}…  {channel:<9} to {}: {}",
            text(&conversation["handoff_destination"]),
            text(&conversation["handoff_reason"]),
        ),
        _ => {
            let first_words = conversation["turns"]
                .as_array()
                .and_then(|turns| turns.iter().find_map(|t| t["user_input"].as_str().filter(|s| !s.is_empty())))
                .map(|s| format!("  \"{}\"", s.chars().take(48).collect::<String>()))
                .unwrap_or_default();
            let transcript = if record["transcript_visible"] == false { "  (transcript off)" } else { "" };
            format!("completed  {short_id}…  {channel:<9} {seconds:>4}s  {turns:>2} turns{first_words}{transcript}")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_record_names_its_project_or_its_conversation_owner_does() {
        let owners = Owners::from([("CA1".to_owned(), "acme-us".to_owned())]);
        let record = json!({"project": "acme-uk", "conversation": {"id": "CA1"}});
        assert_eq!(project_of(&record, &owners), "acme-uk");
        let older = json!({"conversation": {"id": "CA1"}});
        assert_eq!(project_of(&older, &owners), "acme-us");
        assert_eq!(project_of(&json!({"conversation": {"id": "CA9"}}), &owners), "?");
    }

    #[test]
    fn dead_letters_count_as_landed_and_name_their_project() {
        let dir = std::env::temp_dir().join(format!("relay-demo-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let record =
            json!({"project": "acme-uk", "event_type": "conversation.completed", "conversation": {"id": "CA1"}});
        std::fs::write(dir.join(CONVERSATIONS_FILE), format!("{record}\n{{\"half\": ")).unwrap();
        let dead = json!({"event_id": "evt_2", "event_type": "conversation.completed",
            "headers": {"x-relay-project": "acme-us", "x-relay-error": "404 not found"}});
        std::fs::write(dir.join(polyai_relay::queue::embedded::DEAD_FILE), format!("{dead}\n")).unwrap();

        let tally = tally(&dir, &Owners::new());
        assert_eq!(tally.total(), 2);
        assert_eq!(tally, Tally { records: BTreeMap::from([("acme-uk".to_owned(), 1)]), dead: 1 });
        assert_eq!(tally.by_project(), "acme-uk 1");
        let (records, dead) = read(&dir);
        assert_eq!(records.len(), 1, "the half-written line is not read yet");
        assert_eq!(dead, ["acme-us  dead       evt_2  404 not found"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
