//! A project's name (design §12): the label of its metrics, the `project` field of its records,
//! the `x-relay-project` header of its messages, and the key every per-project state hangs on.

use std::{fmt, sync::Arc};

use super::ConfigError;

/// The name of the one project a relay without `RELAY_PROJECTS_FILE` serves.
pub const DEFAULT_PROJECT: &str = "default";

/// The metric label of events that name no configured project (see the worker): no project
/// may be called so, or its numbers would mix with theirs.
pub const UNKNOWN_PROJECT: &str = "unknown";

/// Longest name: it goes into metric labels, headers and queue-friendly strings.
const MAX_LEN: usize = 63;

/// `[a-z0-9-]+`, at most 63 characters: safe as a metric label, a header value and a path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(Arc<str>);

impl ProjectName {
    /// Checks `value`; `context` says where it came from (e.g. `RELAY_PROJECTS_FILE project #2`).
    pub fn parse(context: &str, value: &str) -> Result<Self, ConfigError> {
        let valid = !value.is_empty()
            && value.len() <= MAX_LEN
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ConfigError::new(
                "RELAY_PROJECTS_FILE",
                format!("{context}: name `{value}` must be 1 to {MAX_LEN} of a-z, 0-9 and `-`"),
            ));
        }
        if value == UNKNOWN_PROJECT {
            return Err(ConfigError::new(
                "RELAY_PROJECTS_FILE",
                format!("{context}: name `{UNKNOWN_PROJECT}` is reserved for events of no configured project"),
            ));
        }
        Ok(Self(value.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `project` label of a metric: shares the name, allocates nothing per sample.
    pub fn label(&self) -> metrics::SharedString {
        self.0.clone().into()
    }
}

impl Default for ProjectName {
    fn default() -> Self {
        Self(DEFAULT_PROJECT.into())
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_letters_digits_and_dashes() {
        assert_eq!(ProjectName::parse("p", "acme-uk-2").unwrap().as_str(), "acme-uk-2");
        for bad in ["", "unknown", "Acme", "acme_uk", "acme uk", "a/b", "ü", &"a".repeat(64)] {
            let error = ProjectName::parse("project #1", bad).unwrap_err().to_string();
            assert!(error.starts_with("project #1: name"), "{bad:?}: {error}");
        }
    }
}
