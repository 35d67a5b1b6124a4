//! The worker with two projects (design §12), on both backends: each is fetched with its own key
//! and path, and one project's refused key or 429s hold back only its own events.

use std::{collections::HashSet, time::SystemTime};

use polyai_relay::{
    config::{ProjectName, ReceiverProject, ReceiverSettings},
    queue::headers,
    signature::sign,
    worker::Settle,
};
use secrecy::SecretString;

use crate::{
    backend::{both_backends, Backend},
    fake_polyai::{Reply, ACCOUNT, ACCOUNT_B, API_KEY, API_KEY_B, PROJECT, PROJECT_B},
    helpers::{completed, header, now, spawn_app_with, Options, TestApp, FIRST_PROJECT, SECOND_PROJECT},
};

fn two(backend: Backend) -> Options {
    Options { backend, two_projects: true, ..Options::default() }
}

fn driven(backend: Backend) -> Options {
    Options { drive_worker: true, ..two(backend) }
}

/// A raw event about `conversation_id` on `project`'s path, straight to the worker's queue.
async fn publish(app: &TestApp, project: Option<&str>, conversation_id: &str) {
    app.publish_event(project, conversation_id, &[]).await
}

/// The next `n` records: their conversation ids, each checked to belong to `project`.
async fn records_of(app: &TestApp, project: &str, n: usize) -> HashSet<String> {
    let mut ids = HashSet::new();
    for _ in 0..n {
        let record = app.next_record().await;
        assert_eq!(record.json["project"], project, "{}", record.json);
        ids.insert(record.json["conversation"]["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let response = app.admin_get("/readyz").await;
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The receiver's side of the two projects: each on `/polyai-events/{name}` with its own secret.
fn receiver_project(name: &str, secret: &str) -> ReceiverProject {
    let mut project = ReceiverSettings::new(SecretString::from(secret)).projects.remove(0);
    project.name = ProjectName::parse("test", name).unwrap();
    project.path = format!("/polyai-events/{name}");
    project
}

fn ids(prefix: &str) -> Vec<String> {
    (0..3).map(|i| format!("{prefix}{i}")).collect()
}

both_backends! {
    async fn a_webhook_on_a_projects_path_becomes_that_projects_record(backend: Backend) {
        let (uk_secret, us_secret) = ("whsec_uk_7e21", "whsec_us_3b90");
        let receiver_projects =
            vec![receiver_project(FIRST_PROJECT, uk_secret), receiver_project(SECOND_PROJECT, us_secret)];
        let app = spawn_app_with(Options { receiver_projects: Some(receiver_projects), ..two(backend) }).await;
        for (project, secret, conversation) in [(SECOND_PROJECT, us_secret, "CAus"), (FIRST_PROJECT, uk_secret, "CAuk")] {
            let body = completed(conversation);
            let ts = now().to_string();
            let signature = sign(secret.as_bytes(), Some(&ts), body.as_bytes());
            let response = app.http.post(app.url(&format!("/polyai-events/{project}")))
                .header("x-polyai-timestamp", &ts).header("x-polyai-signature", signature)
                .body(body).send().await.unwrap();
            assert_eq!(response.status(), 204);
            assert_eq!(records_of(&app, project, 1).await, HashSet::from([conversation.to_owned()]));
        }
        let keys: Vec<_> = app.polyai.by_id_requests().into_iter().map(|s| (s.path, s.api_key.unwrap())).collect();
        assert_eq!(keys, [
            (format!("/v3/{ACCOUNT_B}/{PROJECT_B}/conversations/CAus"), API_KEY_B.to_owned()),
            (format!("/v3/{ACCOUNT}/{PROJECT}/conversations/CAuk"), API_KEY.to_owned()),
        ]);
    }

    async fn each_project_is_fetched_with_its_own_key_and_path(backend: Backend) {
        let app = spawn_app_with(driven(backend)).await;
        publish(&app, Some(FIRST_PROJECT), "CAuk").await;
        publish(&app, Some(SECOND_PROJECT), "CAus").await;
        publish(&app, None, "CAplain").await;
        assert_eq!(app.process_next(3).await, [Settle::Ack; 3]);

        // One at a time, in the queue's order.
        let seen: Vec<_> = app.polyai.by_id_requests().into_iter().map(|s| (s.path, s.api_key.unwrap())).collect();
        let path = |account: &str, project: &str, id: &str| format!("/v3/{account}/{project}/conversations/{id}");
        assert_eq!(seen, [
            (path(ACCOUNT, PROJECT, "CAuk"), API_KEY.to_owned()),
            (path(ACCOUNT_B, PROJECT_B, "CAus"), API_KEY_B.to_owned()),
            (path(ACCOUNT, PROJECT, "CAplain"), API_KEY.to_owned()),
        ], "an event without the header belongs to the first project");

        for (conversation, project) in [("CAuk", FIRST_PROJECT), ("CAus", SECOND_PROJECT), ("CAplain", FIRST_PROJECT)] {
            let record = app.next_record().await;
            assert_eq!(record.json["conversation"]["id"], conversation);
            assert_eq!(record.json["project"], project, "the record names its project");
            if let Some(delivery) = &record.delivery {
                assert_eq!(header(delivery, headers::PROJECT).as_deref(), Some(project), "and so does its message");
            }
        }
        assert_eq!(app.metric(r#"relay_enriched_total{project="acme-uk"}"#).await, 2.0);
        assert_eq!(app.metric(r#"relay_enriched_total{project="acme-us"}"#).await, 1.0);
        assert_eq!(app.metric(r#"relay_api_fetches_total{project="acme-us",status="200"}"#).await, 1.0);
    }

    async fn a_refused_key_holds_back_only_its_project_and_loses_nothing(backend: Backend) {
        // Two attempts at most: an event whose wait for its key counted one would be
        // dead-lettered by the single 500 it meets once the key works again.
        let app = spawn_app_with(Options { max_attempts: 2, ..two(backend) }).await;
        app.polyai.revoke(PROJECT);
        let (uk, us) = (ids("CAuk"), ids("CAus"));
        for (a, b) in uk.iter().zip(&us) {
            publish(&app, Some(FIRST_PROJECT), a).await;
            publish(&app, Some(SECOND_PROJECT), b).await;
        }

        // The other project flows on, and the relay stays ready, naming the stuck project.
        assert_eq!(records_of(&app, SECOND_PROJECT, 3).await, us.iter().cloned().collect());
        app.wait_for_metric(r#"relay_worker_paused{project="acme-uk"}"#, 1.0).await;
        assert_eq!(app.metric(r#"relay_worker_paused{project="acme-us"}"#).await, 0.0);
        assert_eq!(readyz(&app).await, (200, "ready; paused projects: acme-uk\n".to_owned()));

        // Probe after probe, the held-back events are not fetched (nor dead-lettered): the probe
        // asks again the one call the key was refused.
        let seen = app.polyai.requests().len();
        app.polyai.wait_for_requests(seen + 1).await;
        let asked = app.polyai.by_id_requests_of(PROJECT).len();
        app.polyai.wait_for_requests(app.polyai.requests().len() + 2).await;
        let probes = &app.polyai.by_id_requests_of(PROJECT)[asked..];
        assert!(probes.len() >= 2, "{probes:?}");
        assert!(probes.iter().all(|probe| probe.path == probes[0].path), "only the refused call: {probes:?}");
        assert!(app.polyai.list_requests_of(PROJECT).is_empty());
        assert_eq!(app.queue.dead_count().await, 0);

        // The key works again: every held-back event is enriched, each surviving one 500.
        for id in &uk {
            app.polyai.script_conversation(id, [Reply::Status(500)]);
        }
        app.polyai.restore(PROJECT);
        assert_eq!(records_of(&app, FIRST_PROJECT, 3).await, uk.iter().cloned().collect());
        assert_eq!(app.queue.dead_count().await, 0, "no attempt was counted while the key was refused");
        app.wait_for_metric(r#"relay_worker_paused{project="acme-uk"}"#, 0.0).await;
        assert_eq!(readyz(&app).await, (200, "ready\n".to_owned()));
    }

    async fn readyz_fails_only_when_every_project_is_paused_and_names_them(backend: Backend) {
        let app = spawn_app_with(two(backend)).await;
        app.polyai.revoke(PROJECT);
        app.polyai.revoke(PROJECT_B);
        publish(&app, Some(FIRST_PROJECT), "CAuk").await;
        publish(&app, Some(SECOND_PROJECT), "CAus").await;
        app.wait_for_readiness(503).await;
        assert_eq!(readyz(&app).await.1, "not ready; paused projects: acme-uk, acme-us\n");

        app.polyai.restore(PROJECT_B);
        app.wait_for_readiness(200).await;
        assert_eq!(readyz(&app).await.1, "ready; paused projects: acme-uk\n");
        assert_eq!(records_of(&app, SECOND_PROJECT, 1).await, HashSet::from(["CAus".to_owned()]));

        app.polyai.restore(PROJECT);
        assert_eq!(records_of(&app, FIRST_PROJECT, 1).await, HashSet::from(["CAuk".to_owned()]));
        app.wait_for_metric(r#"relay_worker_paused{project="acme-uk"}"#, 0.0).await;
        assert_eq!(readyz(&app).await, (200, "ready\n".to_owned()));
    }

    async fn a_429_storm_on_one_project_does_not_hold_back_the_other(backend: Backend) {
        let app = spawn_app_with(driven(backend)).await;
        app.polyai.always_for_project(PROJECT, Reply::RateLimited("3600"));
        let (uk, us) = (ids("CAuk"), ids("CAus"));
        for (a, b) in uk.iter().zip(&us) {
            publish(&app, Some(FIRST_PROJECT), a).await;
            publish(&app, Some(SECOND_PROJECT), b).await;
        }
        // Every event is settled at once: none waits in memory for the rate-limited project.
        assert_eq!(app.process_next(6).await, [Settle::Ack; 6]);
        assert_eq!(records_of(&app, SECOND_PROJECT, 3).await, us.iter().cloned().collect());
        assert_eq!(app.polyai.by_id_requests_of(PROJECT_B).len(), 3);
        // The first 429 paused the project's calls: its other events wait in a delay queue
        // without asking again.
        assert_eq!(app.polyai.by_id_requests_of(PROJECT).len(), 1);
        assert_eq!(app.metric(r#"relay_api_rate_limited_total{project="acme-uk"}"#).await, 1.0);
        assert_eq!(app.metric(r#"relay_api_rate_limited_total{project="acme-us"}"#).await, 0.0);
        assert_eq!(app.metric(r#"relay_worker_retries_total{project="acme-uk",reason="rate_limited"}"#).await, 3.0);
        assert_eq!(app.queue.dead_count().await, 0);
    }

    async fn a_paced_projects_backlog_does_not_hold_back_the_other(backend: Backend) {
        // Four events in progress at a time, and two calls a second for each project: waiting
        // for their turns in memory, the backlog's events would fill the four slots for as long
        // as it lasts, and the other project's event would wait behind them.
        let app = spawn_app_with(Options { api_concurrency: 1, api_rate: Some(2.0), ..two(backend) }).await;
        let backlog: Vec<String> = (0..12).map(|i| format!("CAuk{i:02}")).collect();
        for id in &backlog {
            publish(&app, Some(FIRST_PROJECT), id).await;
        }
        publish(&app, Some(SECOND_PROJECT), "CAus").await;
        // The other project's record comes while most of the backlog waits for its turns in a
        // delay queue rather than in the slots.
        let mut uk = HashSet::new();
        loop {
            let record = app.next_record().await;
            if record.json["project"] == SECOND_PROJECT {
                break;
            }
            uk.insert(record.json["conversation"]["id"].as_str().unwrap().to_owned());
        }
        assert!(uk.len() < 6, "the other project's event came after {} of the backlog's records", uk.len());
        // Each event of the backlog follows, once, each with one call: those held back come
        // back at their turns, and take no other.
        uk.extend(records_of(&app, FIRST_PROJECT, backlog.len() - uk.len()).await);
        assert_eq!(uk, backlog.iter().cloned().collect());
        assert!(app.metric(r#"relay_worker_retries_total{project="acme-uk",reason="paced"}"#).await >= 1.0);
        assert_eq!(app.polyai.by_id_requests_of(PROJECT).len(), backlog.len(), "one call each");
        assert_eq!(app.queue.dead_count().await, 0);
    }

    async fn a_turn_reserved_before_goes_when_due_however_late(backend: Backend) {
        // One call every 100 s: a new event's turn is due at once, the next one's 100 s later,
        // further than an event waits in memory.
        let app = spawn_app_with(Options { api_rate: Some(0.01), ..driven(backend) }).await;
        let paced = r#"relay_worker_retries_total{project="acme-uk",reason="paced"}"#;
        let unix_ms = |offset: i64| {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
            (now + offset).to_string()
        };
        publish(&app, Some(FIRST_PROJECT), "CAnew").await;
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        assert_eq!(app.next_record().await.json["conversation"]["id"], "CAnew");
        publish(&app, Some(FIRST_PROJECT), "CAlater").await;
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        assert_eq!(app.metric(paced).await, 1.0, "held back until its turn");
        // Back after its turn (the worker stopped, or its queue was long): it goes at once, on
        // the turn it had, and takes no other.
        app.publish_event(Some(FIRST_PROJECT), "CAdue", &[(headers::TURN, unix_ms(-5_000))]).await;
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        assert_eq!(app.next_record().await.json["conversation"]["id"], "CAdue");
        assert_eq!(app.metric(paced).await, 1.0);
        assert_eq!(app.polyai.by_id_requests_of(PROJECT).len(), 2, "CAnew's call and CAdue's");
    }

    async fn an_event_naming_a_project_not_served_waits_then_is_dead_lettered(backend: Backend) {
        // A project the receivers serve before the workers do (a roll of one, then the other):
        // its events wait like failed calls, and become dead letters once their attempts are spent.
        let app = spawn_app_with(Options { max_attempts: 2, ..driven(backend) }).await;
        publish(&app, Some("acme-fr"), "CAfr").await;
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        assert_eq!(app.queue.dead_count().await, 0, "not dead-lettered at once");
        // The label is a fixed word: a header's value never becomes one.
        assert_eq!(app.metric(r#"relay_worker_retries_total{project="unknown",reason="unknown_project"}"#).await, 1.0);
        // Back from the delay queue, with its attempts spent.
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        let dead = app.next_dead_letter().await;
        let error = dead.error.unwrap();
        assert!(error.contains("`acme-fr`") && error.contains("does not serve"), "{error}");
        assert_eq!(dead.attempts.as_deref(), Some("2"));
        assert!(app.polyai.requests().is_empty(), "never fetched");
        assert_eq!(app.metric(r#"relay_dead_letters_total{project="unknown",reason="unknown_project"}"#).await, 1.0);
    }

    async fn an_event_of_the_project_before_the_file_belongs_to_the_first(backend: Backend) {
        // `default` is the one project of a relay without a projects file: its events still in
        // the queues when the relay moves to a file belong to the first project.
        let app = spawn_app_with(driven(backend)).await;
        publish(&app, Some("default"), "CAbefore").await;
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        assert_eq!(records_of(&app, FIRST_PROJECT, 1).await, HashSet::from(["CAbefore".to_owned()]));
        assert_eq!(app.queue.dead_count().await, 0);
    }
}
