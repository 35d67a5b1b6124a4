//! `--since`, `--until` and `--client-env`: the window of conversations `backfill` and
//! `reconcile` list, and how its bounds are read.

use clap::Args;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::config::parse_duration;

/// The help below is `backfill`'s; `reconcile` words its own (see `ReconcileArgs`).
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Start of the window: a duration ago (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long)]
    pub since: String,
    /// End of the window, in the same forms; now when omitted.
    #[arg(long)]
    pub until: Option<String>,
    /// Which environment's conversations.
    #[arg(long, default_value = "live", value_parser = ["live", "sandbox", "pre-release"])]
    pub client_env: String,
}

impl WindowArgs {
    /// The window's start and end as times; `default_end` where `--until` is omitted (each
    /// command has its own). Whether the start comes first is the caller's to say, in its words.
    pub fn bounds(
        &self,
        now: OffsetDateTime,
        default_end: OffsetDateTime,
    ) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
        let start = instant("--since", &self.since, now)?;
        let end = self.until.as_deref().map(|u| instant("--until", u, now)).transpose()?.unwrap_or(default_end);
        Ok((start, end))
    }
}

/// `24h` means 24 hours before `now`; otherwise an RFC 3339 time.
pub(super) fn instant(flag: &str, text: &str, now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    let ago = parse_duration(text).map_err(|e| anyhow::anyhow!("{flag}: {e}, or an RFC 3339 time"))?;
    Ok(now - ago)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        window: WindowArgs,
    }

    fn window(args: &[&str]) -> WindowArgs {
        Command::try_parse_from(std::iter::once("command").chain(args.iter().copied())).unwrap().window
    }

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    #[test]
    fn since_and_until_are_durations_ago_or_times_and_until_falls_back_to_the_default() {
        let now = at("2026-03-01T12:00:00Z");
        let default_end = at("2026-03-01T11:50:00Z");
        let (start, end) = window(&["--since", "2h"]).bounds(now, default_end).unwrap();
        assert_eq!((start, end), (now - Duration::from_secs(7200), default_end));

        let args = window(&["--since", "2026-02-28T00:00:00Z", "--until", "30m", "--client-env", "sandbox"]);
        let (start, end) = args.bounds(now, default_end).unwrap();
        assert_eq!((start, end), (at("2026-02-28T00:00:00Z"), now - Duration::from_secs(1800)));
        assert_eq!(args.client_env, "sandbox");
        assert_eq!(window(&["--since", "1d"]).client_env, "live");
    }

    #[test]
    fn a_bound_that_is_neither_names_its_flag() {
        let now = at("2026-03-01T12:00:00Z");
        let error = window(&["--since", "yesterday"]).bounds(now, now).unwrap_err().to_string();
        assert!(error.starts_with("--since: ") && error.ends_with(", or an RFC 3339 time"), "{error}");
        let error = window(&["--since", "1h", "--until", "soon"]).bounds(now, now).unwrap_err().to_string();
        assert!(error.starts_with("--until: "), "{error}");
        assert!(Command::try_parse_from(["command", "--since", "1h", "--client-env", "staging"]).is_err());
    }
}
