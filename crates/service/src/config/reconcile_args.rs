//! Settings of reconciliation (design §9): how often the worker looks for calls no webhook
//! delivered, over which window, and how long a finished call's webhook is given to arrive.

use std::time::Duration;

use clap::Args;

use super::{args::duration, ConfigError, Forwarding, ProjectName};
use crate::queue::ledger::POLYAI_RETRIES_FOR;

/// How a worker reconciles continuously.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// Time between two passes.
    pub every: Duration,
    /// How far back each pass looks.
    pub window: Duration,
    /// Calls that finished less than this long ago are left out: their webhook may be on its way.
    pub settle: Duration,
    /// The `client_env` listed (`live`, `sandbox` or `pre-release`).
    pub client_env: String,
    /// Projects whose calls are not reconciled: each would get records it does not forward.
    pub left_out: Vec<LeftOut>,
}

impl ReconcileSettings {
    /// Why reconciliation is off when it leaves out every one of the worker's `projects`.
    pub fn off_when_all_left_out(&self, projects: usize) -> Option<String> {
        (!self.left_out.is_empty() && self.left_out.len() == projects)
            .then(|| nothing_forwarded(&self.left_out, &self.client_env, "RELAY_RECONCILE_ENV"))
    }
}

/// What the worker says of each project reconciliation leaves out, and `check` with it.
pub const LEAVES_ALONE: &str =
    "reconciliation leaves this project's calls alone: its records would be ones it filters out";

/// A project whose calls reconciliation leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub project: ProjectName,
    pub why: String,
}

/// The projects (each with what it forwards) that records of `client_env`'s finished calls
/// (reconciled or backfilled) would give records they filter out (design §12): such a record
/// stands in for a call's `conversation.completed`.
pub fn left_out(projects: &[(ProjectName, Forwarding)], client_env: &str) -> Vec<LeftOut> {
    projects
        .iter()
        .filter_map(|(project, forwarding)| {
            forwarding.refuses_reconciled(client_env).map(|why| LeftOut { project: project.clone(), why })
        })
        .collect()
}

/// Why nothing is left to do when every project is `left_out` of `client_env`'s calls, which
/// `env_setting` chose.
pub fn nothing_forwarded(left_out: &[LeftOut], client_env: &str, env_setting: &str) -> String {
    let reasons: Vec<String> = left_out.iter().map(|l| format!("project `{}`: {}", l.project, l.why)).collect();
    format!(
        "no project forwards conversation.completed of `{client_env}` calls ({env_setting}), so none would take their records ({}): choose another environment, or forward those events",
        reasons.join("; ")
    )
}

/// The wrapper clap needs so that `Option<Duration>` is one value that may say `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every(pub Option<Duration>);

/// `off` (or nothing) turns the loop off; otherwise a duration.
fn every_value(text: &str) -> Result<Every, String> {
    match text.trim() {
        "" | "off" | "false" => Ok(Every(None)),
        other => duration("RELAY_RECONCILE_EVERY")(other).map(|d| Every(Some(d))),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// Look for finished calls that no webhook delivered this often (`15m`); `off` by default.
    #[arg(long, env = "RELAY_RECONCILE_EVERY", default_value = "off", value_parser = every_value)]
    pub reconcile_every: Every,
    /// How far back each pass looks.
    #[arg(long, env = "RELAY_RECONCILE_WINDOW", default_value = "24h", value_parser = duration("RELAY_RECONCILE_WINDOW"))]
    pub reconcile_window: Duration,
    /// Calls that finished more recently than this are left for their webhook.
    #[arg(long, env = "RELAY_RECONCILE_SETTLE", default_value = "10m", value_parser = duration("RELAY_RECONCILE_SETTLE"))]
    pub reconcile_settle: Duration,
    /// Which environment's calls are reconciled.
    #[arg(long, env = "RELAY_RECONCILE_ENV", default_value = "live", value_parser = ["live", "sandbox", "pre-release"])]
    pub reconcile_env: String,
}

/// The longest call a continuous reconciliation plans for. The list is filtered by when calls
/// started, and a call is reconciled only once it finished: a call that lasts `D` is in reach
/// only while `window - D - settle` remains, so the window must leave room for `D` too.
pub const LONGEST_CALL: Duration = Duration::from_secs(4 * 3600);

/// Refuses a reconciliation that looks further back (`reach`) than the ledger remembers
/// (`RELAY_LOG_RETENTION`): what the ledger has forgotten looks unknown, so calls delivered long
/// ago would be sent again, under new ids (`reconcile:{id}`) that consumers cannot dedupe.
pub fn check_within_retention(setting: &str, reach: Duration, retention: Duration) -> Result<(), ConfigError> {
    if reach <= retention {
        return Ok(());
    }
    Err(ConfigError::new(
        "RELAY_LOG_RETENTION",
        format!(
            "{setting} reaches back {}, further than the ledger remembers (RELAY_LOG_RETENTION, {}): calls delivered before that would be sent again; shorten it, or keep the ledger longer",
            humantime::format_duration(reach),
            humantime::format_duration(retention),
        ),
    ))
}

/// Refuses continuous reconciliation on RabbitMQ without its ledger: it reads the conversations
/// log to know which calls arrived, and every round would otherwise fail, each with a warning.
pub fn check_ledger_kept(on_rabbitmq: bool, conversations_log: Option<&str>) -> Result<(), ConfigError> {
    if !on_rabbitmq || conversations_log.is_some() {
        return Ok(());
    }
    Err(ConfigError::new(
        "RELAY_CONVERSATIONS_LOG",
        "RELAY_RECONCILE_EVERY needs RELAY_CONVERSATIONS_LOG, which is off: reconciliation reads that stream to know which calls arrived; name the stream (polyai.conversations.log by default), or turn reconciliation off",
    ))
}

impl ReconcileArgs {
    /// `projects`: the worker's, each with what it forwards.
    pub fn settings(&self, projects: &[(ProjectName, Forwarding)]) -> Result<Option<ReconcileSettings>, ConfigError> {
        let Some(every) = self.reconcile_every.0 else { return Ok(None) };
        // A pass looks at calls that started less than `window` ago and finished more than
        // `settle` ago (a call whose every webhook the broker refused: PolyAI's retries after the
        // later of its end and its first refusal, which can itself come as long after the end).
        // Passes start `every` apart, plus however long a round takes: with a window shorter
        // than that wait, a call's length and two intervals, the calls of the gap between two
        // passes are never looked at, or are looked at by one pass only, which a failed round
        // (the API down) then misses for good.
        let wait = self.reconcile_settle.max(POLYAI_RETRIES_FOR * 2);
        let needed = wait.saturating_add(every.saturating_mul(2)).saturating_add(LONGEST_CALL);
        if self.reconcile_window < needed {
            return Err(ConfigError::new(
                "RELAY_RECONCILE_WINDOW",
                format!(
                    "RELAY_RECONCILE_WINDOW ({}) must cover twice the {} PolyAI retries a webhook for (or RELAY_RECONCILE_SETTLE, if longer), two RELAY_RECONCILE_EVERY intervals and a call of up to {} ({}), so that every call is looked at by at least two passes once it finished, also one whose every webhook the broker refused",
                    humantime::format_duration(self.reconcile_window),
                    humantime::format_duration(POLYAI_RETRIES_FOR),
                    humantime::format_duration(LONGEST_CALL),
                    humantime::format_duration(needed),
                ),
            ));
        }
        Ok(Some(ReconcileSettings {
            every,
            window: self.reconcile_window,
            settle: self.reconcile_settle,
            client_env: self.reconcile_env.clone(),
            left_out: left_out(projects, &self.reconcile_env),
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::EventTypes;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        reconcile: ReconcileArgs,
    }

    fn settings(args: &[&str]) -> Result<Option<ReconcileSettings>, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("relay").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        let everything = Forwarding { event_types: EventTypes::All, environments: None };
        cli.reconcile.settings(&[(ProjectName::default(), everything)]).map_err(|e| e.to_string())
    }

    #[test]
    fn reconciliation_is_off_unless_an_interval_is_given() {
        assert!(settings(&[]).unwrap().is_none());
        assert!(settings(&["--reconcile-every", "off"]).unwrap().is_none());
        let on = settings(&["--reconcile-every", "15m"]).unwrap().unwrap();
        assert_eq!(
            (on.every, on.window, on.settle),
            (Duration::from_secs(900), Duration::from_secs(86_400), Duration::from_secs(600))
        );
        assert!(settings(&["--reconcile-every", "15"]).unwrap_err().contains("RELAY_RECONCILE_EVERY"));
        let short = settings(&["--reconcile-every", "1m", "--reconcile-window", "5m"]).unwrap_err();
        assert!(short.contains("RELAY_RECONCILE_WINDOW"), "{short}");
    }

    #[test]
    fn projects_that_forward_no_call_ends_of_the_environment_are_left_out() {
        let name = |n: &str| ProjectName::parse("test", n).unwrap();
        let only = |types: &[&str], environments: Option<&[&str]>| Forwarding {
            event_types: EventTypes::Only(types.iter().map(|t| t.to_string()).collect()),
            environments: environments.map(|list| list.iter().map(|e| e.to_string()).collect()),
        };
        let projects = [
            (name("calls"), only(&["conversation.completed", "handoff.created"], None)),
            (name("handoffs"), only(&["handoff.created"], None)),
            (name("sandbox"), only(&["conversation.completed"], Some(&["sandbox"]))),
            (name("everything"), Forwarding { event_types: EventTypes::All, environments: None }),
        ];
        let left = left_out(&projects, "live");
        let names: Vec<&str> = left.iter().map(|l| l.project.as_str()).collect();
        assert_eq!(names, ["handoffs", "sandbox"]);
        assert!(left[0].why.contains("no conversation.completed") && left[1].why.contains("no `live` calls"));
        let in_sandbox = left_out(&projects, "sandbox");
        assert_eq!(in_sandbox.iter().map(|l| l.project.as_str()).collect::<Vec<_>>(), ["handoffs"]);

        let why = nothing_forwarded(&left, "live", "RELAY_RECONCILE_ENV");
        assert!(
            why.starts_with("no project forwards conversation.completed of `live` calls (RELAY_RECONCILE_ENV)")
                && why.contains("project `handoffs`: it forwards no conversation.completed")
                && why.contains("project `sandbox`: it forwards no `live` calls"),
            "{why}"
        );
    }

    #[test]
    fn a_window_longer_than_the_ledger_remembers_is_refused() {
        let week = Duration::from_secs(7 * 86_400);
        assert!(check_within_retention("RELAY_RECONCILE_WINDOW", week, week).is_ok());
        let error = check_within_retention("--since", week * 2, week).unwrap_err().to_string();
        assert!(
            error.contains("--since reaches back 14days") && error.contains("RELAY_LOG_RETENTION, 7days"),
            "{error}"
        );
    }

    #[test]
    fn continuous_reconciliation_on_rabbitmq_needs_its_ledger() {
        assert!(check_ledger_kept(true, Some("polyai.conversations.log")).is_ok());
        assert!(check_ledger_kept(false, None).is_ok(), "the embedded queue keeps its own ledger");
        let error = check_ledger_kept(true, None).unwrap_err().to_string();
        assert!(error.contains("RELAY_CONVERSATIONS_LOG, which is off"), "{error}");
    }

    #[test]
    fn a_window_that_passes_would_leave_gaps_in_is_refused() {
        // Daily passes over the default day: each misses the settle time before the last one.
        let daily = settings(&["--reconcile-every", "24h"]).unwrap_err();
        assert!(daily.contains("RELAY_RECONCILE_WINDOW (1day) must cover") && daily.contains("(2days 16h)"), "{daily}");
        // A call of four hours whose every webhook was refused, the first time six hours after it
        // ended, is in reach from 16h after it started (PolyAI's six hours of retries over) until
        // 24h after: 8h, two passes only if they come at most 4h apart.
        let one_pass = settings(&["--reconcile-every", "4h1m"]);
        assert!(one_pass.is_err(), "one pass for a long call: a failed round misses it");
        assert!(settings(&["--reconcile-every", "4h"]).unwrap().is_some(), "two passes per call");
        let wider = settings(&["--reconcile-every", "24h", "--reconcile-window", "64h"]).unwrap();
        assert!(wider.is_some());
        let short = settings(&["--reconcile-every", "15m", "--reconcile-window", "16h"]).unwrap_err();
        assert!(short.contains("a call of up to 4h"), "a window that leaves no room for a long call: {short}");
        let settle = settings(&["--reconcile-every", "15m", "--reconcile-settle", "13h", "--reconcile-window", "17h"]);
        assert!(settle.unwrap_err().contains("(17h 30m)"), "a settle time longer than PolyAI's retries counts instead");
    }
}
