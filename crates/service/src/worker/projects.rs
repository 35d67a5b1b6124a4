//! The projects a worker fetches for (design §12), each with its own client (key, ids, host), its
//! own pace of calls and its own memory of what it said once. An event picks its project by its
//! `x-relay-project` header; without one, or naming `default` (the one project of a relay without
//! a projects file) when no project is called so, it belongs to the first.

use std::sync::{atomic::AtomicBool, Arc};

use super::{outage::Answered, Throttle};
use crate::{
    config::{ApiSettings, ProjectName, DEFAULT_PROJECT},
    log_limit::LogLimit,
    polyai::PolyaiClient,
    queue::{headers, Message},
};

/// The metric label of an event naming a project the worker does not serve: a fixed word, so a
/// header's value never becomes a label and labels stay bounded by the configured projects.
pub const UNKNOWN_LABEL: &str = crate::config::UNKNOWN_PROJECT;

/// Longest part of an unknown project's name quoted in an error: the header could hold anything.
const QUOTED_NAME_MAX: usize = 64;

pub struct Project {
    /// Its label on metrics, its `project` in records, its header on what the worker publishes.
    pub name: ProjectName,
    /// Fetches with this project's key, ids and host, and probes its key while it is paused.
    pub client: PolyaiClient,
    /// This project's pace: its 429s hold back its own calls, never another project's.
    pub throttle: Throttle,
    /// Whether the hint about hidden transcripts was logged: once per project, since the setting
    /// is per project.
    pub transcript_hint_logged: AtomicBool,
    /// When the API last answered this project's calls: tells its outage from a failing call.
    pub answered: Answered,
    /// The warning that its events wait out an outage, said at most every 10 s.
    pub outage_log: LogLimit,
}

impl Project {
    /// Its metric label.
    pub fn label(&self) -> String {
        self.name.to_string()
    }
}

/// An event names a project the worker does not serve: no key of this worker can fetch it. The
/// receivers may serve it already (one rolled out before the other), so it waits like a failed
/// call before it is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error(
    "x-relay-project names project `{0}`, which this worker does not serve; \
     once it is configured (RELAY_PROJECTS_FILE), `polyai-relay dead replay` sends the event back"
)]
pub struct UnknownProject(String);

/// Every project the worker serves, in configuration order.
pub struct Projects(Vec<Arc<Project>>);

impl Projects {
    /// One [`Project`] per settings; each gets its own throttle at `rate` calls per second.
    pub fn new(settings: &[ApiSettings], rate: Option<f64>) -> anyhow::Result<Self> {
        anyhow::ensure!(!settings.is_empty(), "the worker needs at least one project");
        let projects = settings
            .iter()
            .map(|api| {
                Ok(Arc::new(Project {
                    name: api.project.clone(),
                    client: PolyaiClient::new(api)?,
                    throttle: Throttle::new(rate),
                    transcript_hint_logged: AtomicBool::new(false),
                    answered: Answered::default(),
                    outage_log: LogLimit::default(),
                }))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(projects))
    }

    /// The project `message` belongs to: the one its header names, else the first.
    ///
    /// `default` names the one project of a relay without a projects file. A relay moved to a
    /// file still holds such events (its backlog, its delay queues, its spool): they belong to
    /// the first project, as events from before projects do, unless a project is called so.
    pub fn of(&self, message: &Message) -> Result<&Arc<Project>, UnknownProject> {
        let Some(name) = message.header(headers::PROJECT) else { return Ok(&self.0[0]) };
        match self.0.iter().find(|project| project.name.as_str() == name) {
            Some(project) => Ok(project),
            None if name == DEFAULT_PROJECT => Ok(&self.0[0]),
            None => Err(UnknownProject(name.chars().take(QUOTED_NAME_MAX).collect())),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Project>> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn settings(name: &str) -> ApiSettings {
        let url = "http://127.0.0.1:9".parse().unwrap();
        ApiSettings {
            project: ProjectName::parse("test", name).unwrap(),
            ..ApiSettings::new(url, SecretString::from("key"), "ws", "PROJECT")
        }
    }

    fn event(project: Option<&str>) -> Message {
        let mut message = Message {
            body: bytes::Bytes::from_static(b"{}"),
            message_id: "e".into(),
            event_type: "conversation.completed".into(),
            timestamp: 0,
            headers: Default::default(),
        };
        if let Some(name) = project {
            message.headers.insert(headers::PROJECT.into(), name.into());
        }
        message
    }

    #[test]
    fn an_event_belongs_to_the_project_its_header_names_else_to_the_first() {
        let projects = Projects::new(&[settings("acme-uk"), settings("acme-us")], None).unwrap();
        assert_eq!(projects.of(&event(None)).unwrap().name.as_str(), "acme-uk");
        assert_eq!(projects.of(&event(Some("acme-us"))).unwrap().name.as_str(), "acme-us");
        // From before the projects file: the one project it had.
        assert_eq!(projects.of(&event(Some("default"))).unwrap().name.as_str(), "acme-uk");
        let with_default = Projects::new(&[settings("acme-uk"), settings("default")], None).unwrap();
        assert_eq!(with_default.of(&event(Some("default"))).unwrap().name.as_str(), "default");
        let unknown = projects.of(&event(Some("acme-fr"))).err().unwrap().to_string();
        assert!(unknown.contains("`acme-fr`") && unknown.contains("does not serve"), "{unknown}");
        let long = "x".repeat(500);
        let quoted = projects.of(&event(Some(&long))).err().unwrap().to_string();
        assert!(quoted.len() < 300, "an odd header is quoted only in part: {quoted}");
    }
}
