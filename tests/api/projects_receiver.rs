//! Several projects on one receiver (design §12): a webhook on a project's path is verified with
//! that project's secrets only, filtered by that project's settings, and enqueued naming it.

use polyai_relay::{
    config::{EventTypes, ProjectName, ReceiverProject, ReceiverSettings},
    queue::headers,
    signature::sign,
};
use secrecy::SecretString;

use crate::{
    backend::{both_backends, Backend},
    helpers::{completed, now, spawn_app_with, Options, TestApp},
};

const UK_SECRET: &str = "whsec_acme_uk_5d1f";
const US_SECRET: &str = "whsec_acme_us_80c2";

fn project(name: &str, path: &str, secret: &str) -> ReceiverProject {
    let mut project = ReceiverSettings::new(SecretString::from(secret)).projects.remove(0);
    project.name = ProjectName::parse("test", name).unwrap();
    project.path = path.to_owned();
    project
}

/// `acme-uk` on its default path forwards both types; `acme-us` on a path of its own forwards
/// only handoffs.
async fn two_projects(backend: Backend) -> TestApp {
    let uk = project("acme-uk", "/polyai-events/acme-uk", UK_SECRET);
    let mut us = project("acme-us", "/hooks/us", US_SECRET);
    us.forwarding.event_types = EventTypes::Only(vec!["handoff.created".into()]);
    spawn_app_with(Options { backend, worker: false, receiver_projects: Some(vec![uk, us]), ..Options::default() })
        .await
}

async fn post(app: &TestApp, path: &str, secret: &str, body: &str) -> reqwest::Response {
    let ts = now().to_string();
    let signature = sign(secret.as_bytes(), Some(&ts), body.as_bytes());
    app.http
        .post(app.url(path))
        .header("x-polyai-timestamp", &ts)
        .header("x-polyai-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("the relay answers")
}

fn handoff(conversation_id: &str) -> String {
    serde_json::json!({"type": "handoff.created", "data": {"conversation_id": conversation_id}}).to_string()
}

both_backends! {
    async fn each_project_is_verified_with_its_own_secret_and_the_other_projects_is_refused(backend: Backend) {
        let app = two_projects(backend).await;
        assert_eq!(post(&app, "/polyai-events/acme-uk", UK_SECRET, &completed("CAuk1")).await.status(), 204);
        assert_eq!(post(&app, "/hooks/us", US_SECRET, &handoff("CAus1")).await.status(), 204);

        // Each secret is good, but not on the other project's path.
        assert_eq!(post(&app, "/polyai-events/acme-uk", US_SECRET, &completed("CAuk2")).await.status(), 401);
        assert_eq!(post(&app, "/hooks/us", UK_SECRET, &handoff("CAus2")).await.status(), 401);
        // The one-project path is no route of a relay that lists its projects.
        assert_eq!(post(&app, "/polyai-events", UK_SECRET, &completed("CAuk3")).await.status(), 404);

        let mut events = app.take_raw_events().await;
        events.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        let projects: Vec<(&str, Option<&str>)> =
            events.iter().map(|e| (e.event_type.as_str(), e.header(headers::PROJECT))).collect();
        assert_eq!(projects, [("conversation.completed", Some("acme-uk")), ("handoff.created", Some("acme-us"))]);

        let refused = |project| format!(r#"relay_webhook_requests_total{{outcome="unauthorized",project="{project}"}}"#);
        assert_eq!(app.metric(&refused("acme-uk")).await, 1.0);
        assert_eq!(app.metric(&refused("acme-us")).await, 1.0);
        assert_eq!(app.metric(r#"relay_signature_failures_total{reason="mismatch",project="acme-us"}"#).await, 1.0);
        assert_eq!(app.metric(r#"relay_webhook_requests_total{outcome="accepted",project="acme-uk"}"#).await, 1.0);
    }

    async fn each_project_forwards_only_its_own_event_types(backend: Backend) {
        let app = two_projects(backend).await;
        let ignored = post(&app, "/hooks/us", US_SECRET, &completed("CAus3")).await;
        assert_eq!(ignored.status(), 204);
        assert_eq!(ignored.headers()["x-relay-outcome"], "ignored");
        let forwarded = post(&app, "/polyai-events/acme-uk", UK_SECRET, &completed("CAuk4")).await;
        assert!(forwarded.headers().get("x-relay-outcome").is_none());
        let events = app.take_raw_events().await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].header(headers::PROJECT), Some("acme-uk"));
        assert_eq!(app.metric(r#"relay_events_ignored_total{reason="type",project="acme-us"}"#).await, 1.0);
    }

    async fn the_same_body_sent_to_two_projects_is_two_deliveries(backend: Backend) {
        let app = two_projects(backend).await;
        let body = handoff("CAboth");
        let both = post_body_signed_to_both(&app, &body).await;
        assert_eq!(both, [(204, None), (204, None)], "neither is a duplicate of the other");
        assert_eq!(app.take_raw_events().await.len(), 2);
    }
}

async fn post_body_signed_to_both(app: &TestApp, body: &str) -> Vec<(u16, Option<String>)> {
    let mut answers = Vec::new();
    // Body-signed, so the duplicate check keys on the body's digest: the same for both.
    for (path, secret) in [("/polyai-events/acme-uk", UK_SECRET), ("/hooks/us", US_SECRET)] {
        let signature = sign(secret.as_bytes(), None, body.as_bytes());
        let response = app
            .http
            .post(app.url(path))
            .header("x-polyai-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let outcome = response.headers().get("x-relay-outcome").map(|v| v.to_str().unwrap().to_owned());
        answers.push((response.status().as_u16(), outcome));
    }
    answers
}
