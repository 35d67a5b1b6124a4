//! Which log lines are written: `RUST_LOG` as a default level and `target=level` pairs
//! (`info,lapin=warn,polyai_relay::worker=debug`), the command's own default when it is unset.
//!
//! tracing-subscriber's `Targets`, not its `EnvFilter`: the relay needs no span or field
//! directives, and `EnvFilter` brings a regular-expression engine into the binary and into a
//! clean build (BENCHMARKS.md, "Clean release build").

use tracing_subscriber::filter::{LevelFilter, Targets};

/// lapin logs every message the broker returns, body and headers included, as a warning: an
/// enriched record's transcript would land in the logs. The relay says what it does with a
/// return itself, without the message, so this target is off whatever `RUST_LOG` asks.
const RETURNED_MESSAGES: &str = "lapin::returned_messages";

/// lapin logs at `trace` every frame it reads and writes and every command it queues: message
/// bodies and headers, and the login's response, which holds the broker password. So lapin, and
/// every target under it, goes no further than `debug`, whatever `RUST_LOG` asks.
const LAPIN: &str = "lapin";

/// The OpenTelemetry SDK's own log lines (its crate names are their targets): it logs every failed
/// export, for as long as a collector refuses. The relay says so itself, once per interval
/// (`export_failures`), so these are off whatever `RUST_LOG` asks.
const OPENTELEMETRY: [&str; 3] = ["opentelemetry", "opentelemetry_sdk", "opentelemetry-otlp"];

/// The filter the logs are written through, and what was wrong with `RUST_LOG`, if anything.
pub struct LogFilter {
    pub targets: Targets,
    unreadable: Option<String>,
}

impl LogFilter {
    /// `RUST_LOG` read, or `default_level` (a level name) when it is unset, empty or unreadable.
    pub fn from_env(default_level: &str) -> Self {
        Self::parse(std::env::var("RUST_LOG").ok().as_deref(), default_level)
    }

    fn parse(rust_log: Option<&str>, default_level: &str) -> Self {
        let default = || default_level.parse::<Targets>().expect("a command's default log level is a level name");
        let (targets, unreadable) = match rust_log.map(str::trim).filter(|value| !value.is_empty()) {
            None => (default(), None),
            Some(value) => match value.parse::<Targets>() {
                Ok(targets) => (targets, None),
                Err(error) => (default(), Some(format!("{value:?}: {error}"))),
            },
        };
        let targets =
            OPENTELEMETRY.iter().fold(targets.with_target(RETURNED_MESSAGES, LevelFilter::OFF), |targets, target| {
                targets.with_target(*target, LevelFilter::OFF)
            });
        let targets = at_most_under(targets, LAPIN, LevelFilter::DEBUG);
        Self { targets, unreadable }
    }

    /// Says, once logging is installed, that `RUST_LOG` was set but could not be read: the
    /// operator who set it otherwise only sees fewer or more lines than asked for, and no reason.
    pub fn warn_if_unreadable(&self, default_level: &str) {
        if let Some(problem) = &self.unreadable {
            tracing::warn!(
                "RUST_LOG {problem}; logging at {default_level}. It takes a level and target=level pairs, \
                 comma-separated: info,lapin=warn"
            );
        }
    }
}

/// `targets` with `root` and every target under it that they name as verbose as they make it,
/// but no more than `most`.
fn at_most_under(targets: Targets, root: &str, most: LevelFilter) -> Targets {
    let prefix = format!("{root}::");
    let under: Vec<String> =
        targets.iter().map(|(target, _)| target).filter(|t| t.starts_with(&prefix)).map(str::to_owned).collect();
    let targets = at_most(targets, root, most);
    under.iter().fold(targets, |targets, target| at_most(targets, target, most))
}

/// `targets` with `target` as verbose as they make it, but no more than `most`.
fn at_most(targets: Targets, target: &str, most: LevelFilter) -> Targets {
    use tracing::Level;
    let asked = [Level::TRACE, Level::DEBUG, Level::INFO, Level::WARN, Level::ERROR]
        .into_iter()
        .find(|level| targets.would_enable(target, level))
        .map_or(LevelFilter::OFF, LevelFilter::from_level);
    targets.with_target(target, asked.min(most))
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn enabled(filter: &LogFilter, target: &str, level: Level) -> bool {
        filter.targets.would_enable(target, &level)
    }

    #[test]
    fn unset_or_empty_is_the_commands_default() {
        for rust_log in [None, Some(""), Some("  ")] {
            let filter = LogFilter::parse(rust_log, "warn");
            assert!(enabled(&filter, "polyai_relay", Level::WARN), "{rust_log:?}");
            assert!(!enabled(&filter, "polyai_relay", Level::INFO), "{rust_log:?}");
            assert!(filter.unreadable.is_none());
        }
    }

    #[test]
    fn a_level_and_target_pairs_are_read() {
        let filter = LogFilter::parse(Some("info,lapin=warn,polyai_relay::worker=debug"), "warn");
        assert!(enabled(&filter, "polyai_relay::receiver", Level::INFO));
        assert!(!enabled(&filter, "polyai_relay::receiver", Level::DEBUG));
        assert!(enabled(&filter, "polyai_relay::worker::process", Level::DEBUG));
        assert!(!enabled(&filter, "lapin::channel", Level::INFO));
        assert!(enabled(&filter, "lapin::channel", Level::WARN));
        assert!(filter.unreadable.is_none());
    }

    #[test]
    fn the_messages_lapin_logs_as_returned_are_never_written_whatever_rust_log_asks() {
        for rust_log in [None, Some("trace"), Some("info,lapin=trace"), Some("lapin::returned_messages=trace")] {
            let filter = LogFilter::parse(rust_log, "info");
            assert!(!enabled(&filter, RETURNED_MESSAGES, Level::WARN), "{rust_log:?}");
        }
        for target in OPENTELEMETRY {
            assert!(!enabled(&LogFilter::parse(Some("trace"), "info"), target, Level::ERROR), "{target}");
        }
        // lapin's other lines are as asked, up to debug (see the next test).
        assert!(enabled(&LogFilter::parse(Some("lapin=trace"), "info"), "lapin::channel", Level::DEBUG));
    }

    #[test]
    fn lapins_trace_lines_are_never_written_and_its_other_lines_are_as_asked() {
        let targets = ["lapin", "lapin::channels", "lapin::io_loop", "lapin::internal_rpc"];
        for rust_log in ["trace", "info,lapin=trace", "lapin::io_loop=trace,lapin::channels=trace", "lapin::a::b=trace"]
        {
            let filter = LogFilter::parse(Some(rust_log), "info");
            for target in targets.iter().chain(&["lapin::a::b"]) {
                assert!(!enabled(&filter, target, Level::TRACE), "{rust_log} {target}");
            }
        }
        let traced = LogFilter::parse(Some("trace"), "info");
        assert!(targets.iter().all(|target| enabled(&traced, target, Level::DEBUG)));
        let quiet = LogFilter::parse(Some("warn,lapin::io_loop=error"), "info");
        assert!(!enabled(&quiet, "lapin::channels", Level::INFO), "no more than asked");
        assert!(enabled(&quiet, "lapin::channels", Level::WARN));
        assert!(!enabled(&quiet, "lapin::io_loop", Level::WARN));
        assert!(!enabled(&LogFilter::parse(Some("off"), "info"), "lapin::frames", Level::ERROR));
    }

    #[test]
    fn an_unreadable_value_falls_back_to_the_default_and_says_why() {
        let filter = LogFilter::parse(Some("info,lapin=loud"), "info");
        assert!(enabled(&filter, "lapin", Level::INFO));
        assert!(!enabled(&filter, "lapin", Level::DEBUG));
        let problem = filter.unreadable.expect("the problem is kept for the warning");
        assert!(problem.starts_with("\"info,lapin=loud\""), "{problem}");
    }
}
