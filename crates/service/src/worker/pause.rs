//! Projects whose key the API refuses (design §5's 401/403 row, per project as §12 asks).
//!
//! A refused key is a project's problem, not an event's: the project is paused, its events wait
//! in a delay queue (never in memory, never counting an attempt), and a probe asks every
//! `RELAY_AUTH_PROBE_INTERVAL` whether the key works again. The other projects flow on. When
//! every project is paused nothing can flow: the consumer stops taking events and `/readyz`
//! answers 503 until one key is accepted again.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{outage::CallKind, projects::Project, Worker};
use crate::{
    config::ProjectName,
    polyai::{ApiError, KeyedCall},
    telemetry::{names, Metrics},
    wall_clock::unix_millis,
};

/// Which projects are paused, as `/readyz` and the consumer see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PausedProjects {
    /// The paused projects, by name: `/readyz` lists them so an operator sees which one is stuck.
    pub names: BTreeSet<ProjectName>,
    /// How many projects the worker serves: with all of them paused, nothing can flow.
    pub serving: usize,
}

impl PausedProjects {
    /// Every project is paused: nothing can flow.
    pub fn all(&self) -> bool {
        !self.names.is_empty() && self.names.len() >= self.serving
    }

    /// `acme-uk, acme-us`: the paused projects, for a human.
    pub fn list(&self) -> String {
        self.names.iter().map(ProjectName::as_str).collect::<Vec<_>>().join(", ")
    }
}

/// The paused set, shared by the worker, its probes and `/readyz`.
#[derive(Clone)]
pub(super) struct Pauses(Arc<watch::Sender<PausedProjects>>);

impl Pauses {
    pub fn new(serving: usize) -> Self {
        Self(Arc::new(watch::Sender::new(PausedProjects { names: BTreeSet::new(), serving })))
    }

    pub fn subscribe(&self) -> watch::Receiver<PausedProjects> {
        self.0.subscribe()
    }

    /// Every project is paused: nothing can flow.
    pub fn every_project(&self) -> bool {
        self.0.borrow().all()
    }

    pub fn is_paused(&self, name: &ProjectName) -> bool {
        self.0.borrow().names.contains(name)
    }

    /// Pauses `name`; true when it was not paused already (the caller starts the probe).
    fn pause(&self, name: &ProjectName) -> bool {
        self.0.send_if_modified(|paused| paused.names.insert(name.clone()))
    }

    fn resume(&self, name: &ProjectName) {
        self.0.send_if_modified(|paused| paused.names.remove(name));
    }
}

impl Worker {
    /// Pauses `project` after the API refused its key, and starts its probe (once per pause).
    /// `call`: the call refused, which the probe makes again.
    pub(super) fn pause_project(&self, project: &Arc<Project>, error: &ApiError, call: KeyedCall) {
        if !self.pauses.pause(&project.name) {
            return;
        }
        let label = project.label();
        self.metrics.record(|| metrics::gauge!(names::WORKER_PAUSED, "project" => label).set(1.0));
        tracing::error!(project = %project.name, %error, "the API refused the project's key; its events are held back until it is accepted again (check POLYAI_API_KEY or the project's api_key_file, and its project scope)");
        let probe = Probe {
            project: project.clone(),
            call,
            pauses: self.pauses.clone(),
            interval: self.auth_probe_interval,
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(probe.run());
    }
}

/// Asks the API, every probe interval, whether a paused project's key works again.
struct Probe {
    /// The paused project: its client asks with its key.
    project: Arc<Project>,
    /// The call its key was refused for, asked again (see `polyai::KeyedCall`).
    call: KeyedCall,
    /// Where the project is resumed.
    pauses: Pauses,
    /// `RELAY_AUTH_PROBE_INTERVAL`: often enough to resume soon, rarely enough not to hammer.
    interval: Duration,
    /// For the project's `relay_worker_paused` gauge.
    metrics: Metrics,
    /// Ends the probe with the relay.
    shutdown: CancellationToken,
}

impl Probe {
    async fn run(self) {
        let project = &self.project;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let asked = project.client.ask_again(&self.call).await;
            project.answered.note(CallKind::from(&self.call), &asked, unix_millis());
            match asked {
                Err(ApiError::Unauthorized { status, .. }) => {
                    tracing::warn!(project = %project.name, status, "the API still refuses the project's key; its events stay held back");
                }
                // No answer about the key either way. Resuming on it would hand the events to a
                // key that may still be refused: each pause gives the worker's prefetched
                // deliveries back to the queue, which counts them against its delivery limit,
                // so a probe that flapped between a 401 and a 5xx would dead-letter them.
                Err(error @ (ApiError::Server { .. } | ApiError::Transport(_))) => {
                    tracing::info!(project = %project.name, %error, "the API did not answer the probe of the project's key; asking again");
                }
                // Any other answer (the call served, a 404, a 429) says the key was accepted.
                _ => break,
            }
        }
        tracing::info!(project = %project.name, "the API accepts the project's key again; its events flow again");
        self.pauses.resume(&project.name);
        let label = project.label();
        self.metrics.record(|| metrics::gauge!(names::WORKER_PAUSED, "project" => label).set(0.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ProjectName {
        ProjectName::parse("test", text).unwrap()
    }

    #[test]
    fn nothing_flows_only_when_every_project_is_paused() {
        let pauses = Pauses::new(2);
        let watch = pauses.subscribe();
        assert!(!watch.borrow().all());
        assert!(pauses.pause(&name("acme-uk")));
        assert!(!pauses.pause(&name("acme-uk")), "a second refusal does not start a second probe");
        assert!(pauses.is_paused(&name("acme-uk")) && !pauses.is_paused(&name("acme-us")));
        assert!(!watch.borrow().all());
        pauses.pause(&name("acme-us"));
        assert!(watch.borrow().all());
        assert_eq!(watch.borrow().list(), "acme-uk, acme-us");
        pauses.resume(&name("acme-uk"));
        assert!(!watch.borrow().all());
        assert_eq!(watch.borrow().list(), "acme-us");
    }
}
