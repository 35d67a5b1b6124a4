//! What ends an event's run of failures the API gave no answer to (the worker's outage rule), on
//! both backends. A run whose day is spent counts every failure; an answer to the event's own
//! call (a 404, a 429, a refused key) or a hold for its project's refused key ends the run, and
//! the next failure starts one with a day of its own, so the outage after it is waited out
//! rather than dead-lettered.
//!
//! Each test starts from an event whose run began over a day ago, as one comes back from a long
//! outage. The control allows two attempts, which two 503s spend; the others allow three, which
//! the answer and two 503s would spend were the run not ended: ended, the second 503 waits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use polyai_relay::{queue::headers, worker::Settle};

use crate::{
    backend::{both_backends, Backend},
    fake_polyai::{Reply, PROJECT},
    helpers::{spawn_app_with, Options, TestApp},
};

const TRANSIENT: &str = r#"relay_worker_retries_total{project="default",reason="transient"}"#;
const API_DOWN: &str = r#"relay_worker_retries_total{project="default",reason="api_down"}"#;

fn three_attempts(backend: Backend) -> Options {
    Options { backend, max_attempts: 3, ..Options::default() }
}

/// Publishes an event about `conversation_id` whose conversation calls have failed with no
/// answer since 25 hours ago.
async fn publish_a_day_into_a_run(app: &TestApp, conversation_id: &str) {
    let then = SystemTime::now() - Duration::from_secs(25 * 3600);
    let then = then.duration_since(UNIX_EPOCH).expect("after 1970").as_millis().to_string();
    let run = [
        (headers::FAILING_SINCE, then.clone()),
        (headers::FAILED_AT, then),
        (headers::FAILING_CALL, "conversation".to_owned()),
    ];
    app.publish_event(None, conversation_id, &run).await;
}

/// After the answer that ends the run: one 503 that counts (the first of a new run), one that
/// waits (nothing answered since), then the record. Were the run not ended, the second 503
/// would count too and spend the last attempt.
async fn the_outage_after_is_waited_out(app: &TestApp, conversation_id: &str) {
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], conversation_id);
    assert_eq!(app.queue.dead_count().await, 0);
    assert_eq!(app.metric(TRANSIENT).await, 1.0);
    assert_eq!(app.metric(API_DOWN).await, 1.0);
}

both_backends! {
    async fn a_run_a_day_old_counts_every_failure(backend: Backend) {
        let app = spawn_app_with(Options { max_attempts: 2, ..three_attempts(backend) }).await;
        app.polyai.script_conversation("CAspent", [Reply::Status(503), Reply::Status(503)]);
        publish_a_day_into_a_run(&app, "CAspent").await;
        // Two 503s in a row, nothing answered between: a fresh run would wait the second out.
        let dead = app.next_dead_letter().await;
        assert_eq!(dead.attempts.as_deref(), Some("2"));
        assert_eq!(app.metric(API_DOWN).await, 0.0);
    }

    async fn a_404_ends_the_run(backend: Backend) {
        let app = spawn_app_with(three_attempts(backend)).await;
        app.polyai.script_conversation("CA404", [Reply::Status(404), Reply::Status(503), Reply::Status(503)]);
        publish_a_day_into_a_run(&app, "CA404").await;
        the_outage_after_is_waited_out(&app, "CA404").await;
        assert_eq!(app.metric(r#"relay_worker_retries_total{project="default",reason="not_found"}"#).await, 1.0);
    }

    async fn a_429_ends_the_run(backend: Backend) {
        let app = spawn_app_with(three_attempts(backend)).await;
        let replies = [Reply::RateLimited("0"), Reply::Status(503), Reply::Status(503)];
        app.polyai.script_conversation("CA429", replies);
        publish_a_day_into_a_run(&app, "CA429").await;
        the_outage_after_is_waited_out(&app, "CA429").await;
        assert_eq!(app.metric(r#"relay_api_rate_limited_total{project="default"}"#).await, 1.0);
    }

    async fn a_refused_key_ends_the_run(backend: Backend) {
        let app = spawn_app_with(three_attempts(backend)).await;
        // The refusal, the probe's call (the same conversation, asked again) served, then the outage.
        let replies = [Reply::Status(401), Reply::Conversation, Reply::Status(503), Reply::Status(503)];
        app.polyai.script_conversation("CAkey", replies);
        publish_a_day_into_a_run(&app, "CAkey").await;
        the_outage_after_is_waited_out(&app, "CAkey").await;
        app.wait_for_metric(r#"relay_worker_paused{project="default"}"#, 0.0).await;
    }

    async fn a_hold_for_the_projects_refused_key_ends_the_run(backend: Backend) {
        let app = spawn_app_with(Options { drive_worker: true, ..three_attempts(backend) }).await;
        // Another event's call meets the refusal: the project pauses.
        app.polyai.revoke(PROJECT);
        app.publish_event(None, "CAfirst", &[]).await;
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        app.wait_for_metric(r#"relay_worker_paused{project="default"}"#, 1.0).await;
        // The event a day into its run comes while the project is paused: held, not fetched.
        publish_a_day_into_a_run(&app, "CAheld").await;
        let asked = app.polyai.by_id_requests().len();
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        let held = r#"relay_worker_retries_total{project="default",reason="key_refused"}"#;
        assert_eq!(app.metric(held).await, 2.0);
        app.polyai.script_conversation("CAheld", [Reply::Status(503), Reply::Status(503)]);
        app.polyai.restore(PROJECT);
        app.wait_for_metric(r#"relay_worker_paused{project="default"}"#, 0.0).await;
        assert!(app.polyai.by_id_requests()[asked..].iter().all(|seen| !seen.path.ends_with("/CAheld")));
        // CAfirst's record, and CAheld's three steps: a 503 counted, a 503 waited out, the record.
        assert_eq!(app.process_next(4).await, [Settle::Ack; 4]);
        let mut enriched = [app.next_record().await, app.next_record().await]
            .map(|record| record.json["conversation"]["id"].as_str().unwrap().to_owned());
        enriched.sort();
        assert_eq!(enriched, ["CAfirst", "CAheld"]);
        assert_eq!(app.queue.dead_count().await, 0);
        assert_eq!(app.metric(TRANSIENT).await, 1.0);
        assert_eq!(app.metric(API_DOWN).await, 1.0);
    }
}
