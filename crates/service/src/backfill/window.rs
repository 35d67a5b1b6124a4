//! A backfill's window, and what a re-run's window adds to the one a checkpoint saved.
//!
//! A checkpoint keeps the window its first run resolved, and its cursor belongs to that window's
//! query. Bounds given as durations (`--since 24h`, `--until 1h`, `--until` left out) resolve
//! against a later now on a re-run, so the same arguments ask for a window that starts and ends
//! no earlier than the saved one: finishing the saved window and then listing from its end to
//! the new end covers all of it, and absolute bounds ask for the saved window itself.

use std::fmt;

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::Checkpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: OffsetDateTime,
    /// Exclusive.
    pub end: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
#[error("the checkpoint's {field} `{text}` is not an RFC 3339 time; delete the checkpoint to start over")]
pub struct UnreadableWindow {
    field: &'static str,
    text: String,
}

impl Window {
    /// The window a checkpoint pages.
    pub fn of(checkpoint: &Checkpoint) -> Result<Self, UnreadableWindow> {
        let time = |field, text: &str| {
            OffsetDateTime::parse(text, &Rfc3339).map_err(|_| UnreadableWindow { field, text: text.to_owned() })
        };
        Ok(Self { start: time("start_time", &checkpoint.start_time)?, end: time("end_time", &checkpoint.end_time)? })
    }

    /// What `asked` holds past this window's end: from that end (or from `asked`'s start, when
    /// it starts later) to `asked`'s end. `None` when `asked` ends no later.
    pub fn beyond(&self, asked: Window) -> Option<Window> {
        let start = self.end.max(asked.start);
        (start < asked.end).then_some(Window { start, end: asked.end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |time: OffsetDateTime| time.format(&Rfc3339).unwrap_or_default();
        write!(f, "{} to {}", text(self.start), text(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    fn window(start: &str, end: &str) -> Window {
        Window { start: at(start), end: at(end) }
    }

    #[test]
    fn the_same_window_asked_again_adds_nothing() {
        let saved = window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z");
        assert_eq!(saved.beyond(saved), None);
    }

    #[test]
    fn a_window_that_moved_on_adds_what_lies_past_the_saved_end() {
        let saved = window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z");
        let an_hour_on = window("2026-03-01T01:00:00Z", "2026-03-02T01:00:00Z");
        assert_eq!(saved.beyond(an_hour_on), Some(window("2026-03-02T00:00:00Z", "2026-03-02T01:00:00Z")));
    }

    #[test]
    fn a_window_that_starts_after_the_saved_end_is_added_whole_and_the_gap_before_it_is_not() {
        let saved = window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z");
        let weeks_on = window("2026-03-20T00:00:00Z", "2026-03-21T00:00:00Z");
        assert_eq!(saved.beyond(weeks_on), Some(weeks_on));
    }

    #[test]
    fn a_window_whose_end_stayed_put_adds_nothing() {
        // `--since 24h --until 2026-03-02T00:00:00Z`: the start moved on, the end is absolute.
        let saved = window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z");
        assert_eq!(saved.beyond(window("2026-03-01T06:00:00Z", "2026-03-02T00:00:00Z")), None);
    }

    #[test]
    fn a_checkpoint_window_reads_back_and_shows_both_bounds() {
        let checkpoint: Checkpoint = serde_json::from_value(serde_json::json!({
            "key": {"since": "24h", "until": null, "client_env": "live", "account_id": "a", "project_id": "p"},
            "start_time": "2026-03-01T00:00:00Z",
            "end_time": "2026-03-02T00:00:00Z",
            "cursor": null, "offset": null, "pages": 0, "published": 0, "skipped_in_progress": 0,
        }))
        .unwrap();
        let saved = Window::of(&checkpoint).unwrap();
        assert_eq!(saved, window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"));
        assert_eq!(saved.to_string(), "2026-03-01T00:00:00Z to 2026-03-02T00:00:00Z");
        let broken = Checkpoint { end_time: "tomorrow".into(), ..checkpoint };
        assert!(Window::of(&broken).unwrap_err().to_string().contains("end_time `tomorrow`"));
    }
}
