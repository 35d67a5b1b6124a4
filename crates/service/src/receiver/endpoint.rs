//! One project's webhook endpoint (design §12): the secrets its path is verified with, and the
//! filters its events pass. The receiver has one per project; a route's state names which.

use std::sync::Arc;

use crate::{
    config::{Forwarding, ProjectName, ReceiverProject},
    log_limit::LogLimit,
    signature::Verifier,
};

use super::{meters::WebhookMeters, Receiver};

pub struct Endpoint {
    /// Names the project in the raw event's `x-relay-project` header and in metric labels.
    pub name: ProjectName,
    /// Only this project's secrets: a webhook on its path signed with another project's secret
    /// is refused, so one project's leaked secret cannot inject events into another.
    pub verifier: Verifier,
    /// Which of its verified events travel on.
    pub forwarding: Forwarding,
    /// What its accepted webhooks record.
    pub meters: WebhookMeters,
    /// Its refusals are logged once per kind and interval: an outage answers thousands of 503s,
    /// which `relay_webhook_requests_total` counts; the log only needs to say it is happening.
    /// Each project's own, so a flood of refusals on one path does not hide another's (a
    /// secret rotated on one side only).
    pub refusals: LogLimit,
}

impl Endpoint {
    pub fn new(project: &ReceiverProject) -> Self {
        let signature = &project.signature;
        Self {
            name: project.name.clone(),
            verifier: Verifier::new(&signature.secrets, signature.scheme, signature.tolerance),
            forwarding: project.forwarding.clone(),
            meters: WebhookMeters::new(project.name.label()),
            refusals: LogLimit::default(),
        }
    }
}

/// The state of one project's route: the shared receiver, and which of its endpoints this is.
#[derive(Clone)]
pub struct Route {
    pub receiver: Arc<Receiver>,
    pub project: usize,
}

impl Route {
    pub fn endpoint(&self) -> &Endpoint {
        &self.receiver.endpoints[self.project]
    }
}
