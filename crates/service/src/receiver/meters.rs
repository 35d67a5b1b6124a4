//! The series every accepted webhook records, as handles each project keeps ([`Kept`]): the
//! request's outcome, the signature that matched, the time to the broker's confirm and the gauge
//! of bodies being read. Other outcomes are rare and are looked up as they come.

use metrics::{Counter, Gauge, Histogram, SharedString};

use crate::{
    signature::{MatchedScheme, SecretSlot},
    telemetry::{names, Kept, Metrics},
};

/// The outcome of a webhook enqueued and confirmed.
pub const ACCEPTED: &str = "accepted";

pub struct WebhookMeters {
    /// The `project` label of every series here.
    project: SharedString,
    accepted: Kept<Counter>,
    /// By the scheme and the secret that matched: `[timestamped, body][current, previous]`.
    verified: [[Kept<Counter>; 2]; 2],
    ack_seconds: Kept<Histogram>,
    bodies_reading: Kept<Gauge>,
}

impl WebhookMeters {
    pub fn new(project: SharedString) -> Self {
        Self {
            project,
            accepted: Kept::new(),
            verified: Default::default(),
            ack_seconds: Kept::new(),
            bodies_reading: Kept::new(),
        }
    }

    /// `relay_webhook_requests_total` for a request's `outcome`.
    pub fn request(&self, meter: &Metrics, outcome: &'static str) {
        let project = || self.project.clone();
        if outcome == ACCEPTED {
            let accepted = self
                .accepted
                .get(meter, || metrics::counter!(names::REQUESTS, "outcome" => ACCEPTED, "project" => project()));
            meter.record(|| accepted.increment(1));
        } else {
            meter.record(|| {
                metrics::counter!(names::REQUESTS, "outcome" => outcome, "project" => project()).increment(1)
            });
        }
    }

    /// `relay_signature_verified_total` for the scheme and the secret that matched.
    pub fn verified(&self, meter: &Metrics, scheme: MatchedScheme, secret: SecretSlot) {
        let row = match scheme {
            MatchedScheme::Timestamped => 0,
            MatchedScheme::Body => 1,
        };
        let column = match secret {
            SecretSlot::Current => 0,
            SecretSlot::Previous => 1,
        };
        let (scheme, secret, project) = (scheme.as_str(), secret.as_str(), self.project.clone());
        let verified = self.verified[row][column].get(
            meter,
            || metrics::counter!(names::VERIFIED, "scheme" => scheme, "secret" => secret, "project" => project),
        );
        meter.record(|| verified.increment(1));
    }

    /// `relay_ack_duration_seconds`: from the request's start to the broker's confirm.
    pub fn acked_after(&self, meter: &Metrics, seconds: f64) {
        let ack_seconds = self.ack_seconds.get(meter, || metrics::histogram!(names::ACK_SECONDS));
        meter.record(|| ack_seconds.record(seconds));
    }

    /// `relay_webhook_bodies_reading`, the gauge a body being read is counted in.
    pub fn bodies_reading(&self, meter: &Metrics) -> Gauge {
        self.bodies_reading.get(meter, || metrics::gauge!(names::BODIES_READING)).clone()
    }
}
