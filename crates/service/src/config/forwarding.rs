//! What a project forwards (design §12's `events` and `environments`, by default `RELAY_EVENTS`
//! and `RELAY_ENVIRONMENTS`): the receiver answers the rest 204 and drops it, and reconciliation
//! makes no records of calls the project would not forward.

use super::EventTypes;

/// The event type whose records reconciliation stands in for: a call's end.
const CALL_ENDED: &str = "conversation.completed";

/// Why a verified event is dropped rather than forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    Type,
    Environment,
}

impl Ignored {
    /// The `reason` label of `relay_events_ignored_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::Environment => "environment",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub event_types: EventTypes,
    /// `None` forwards every environment.
    pub environments: Option<Vec<String>>,
}

impl Forwarding {
    /// Why a verified event is dropped rather than forwarded, if it is. An event that names no
    /// environment passes any environment filter.
    pub fn ignores(&self, event_type: &str, environment: Option<&str>) -> Option<Ignored> {
        if !self.event_types.forwards(event_type) {
            return Some(Ignored::Type);
        }
        match (&self.environments, environment) {
            (Some(allowed), Some(environment)) if !allowed.iter().any(|e| e == environment) => {
                Some(Ignored::Environment)
            }
            _ => None,
        }
    }

    /// Why reconciling `client_env`'s calls would make records this project does not forward,
    /// if it would: a reconciled record stands in for the `conversation.completed` of a call of
    /// that environment.
    pub fn refuses_reconciled(&self, client_env: &str) -> Option<String> {
        match self.ignores(CALL_ENDED, Some(client_env))? {
            Ignored::Type => Some(format!("it forwards no {CALL_ENDED} (its `events`, or RELAY_EVENTS)")),
            Ignored::Environment => Some(format!(
                "it forwards no `{client_env}` calls (its `environments`, or RELAY_ENVIRONMENTS: {})",
                self.environments.as_deref().unwrap_or_default().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding(types: &[&str], environments: Option<&[&str]>) -> Forwarding {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Forwarding { event_types: EventTypes::Only(list(types)), environments: environments.map(list) }
    }

    #[test]
    fn an_event_of_another_type_or_environment_is_ignored() {
        let live = forwarding(&["conversation.completed"], Some(&["live"]));
        assert_eq!(live.ignores("conversation.completed", Some("live")), None);
        assert_eq!(live.ignores("conversation.completed", None), None, "no environment named");
        assert_eq!(live.ignores("handoff.created", Some("live")), Some(Ignored::Type));
        assert_eq!(live.ignores("conversation.completed", Some("sandbox")), Some(Ignored::Environment));
        let all = Forwarding { event_types: EventTypes::All, environments: None };
        assert_eq!(all.ignores("anything", Some("sandbox")), None);
    }

    #[test]
    fn reconciled_records_are_made_only_for_projects_that_forward_the_calls_end() {
        let all = Forwarding { event_types: EventTypes::All, environments: None };
        assert_eq!(all.refuses_reconciled("live"), None);
        assert_eq!(forwarding(&["conversation.completed", "handoff.created"], None).refuses_reconciled("live"), None);
        let handoffs = forwarding(&["handoff.created"], None).refuses_reconciled("live").unwrap();
        assert!(handoffs.contains("no conversation.completed"), "{handoffs}");
        let sandbox = forwarding(&["conversation.completed"], Some(&["sandbox", "pre-release"]));
        assert_eq!(sandbox.refuses_reconciled("sandbox"), None);
        let why = sandbox.refuses_reconciled("live").unwrap();
        assert!(why.contains("no `live` calls") && why.contains("sandbox, pre-release"), "{why}");
    }
}
