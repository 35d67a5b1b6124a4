//! Each row of the worker's retry table (design §5), on both backends.

use std::time::Duration;

use crate::{
    backend::{both_backends, Backend},
    fake_polyai::Reply,
    helpers::{completed, spawn_app_with, Options},
};

fn on(backend: Backend) -> Options {
    Options { backend, ..Options::default() }
}

both_backends! {
    async fn a_5xx_is_retried_with_backoff_until_it_succeeds(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.script([Reply::Status(503), Reply::Status(500)]);
        assert_eq!(app.post_signed(&completed("CA5xx")).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CA5xx");
        assert_eq!(app.polyai.by_id_requests().len(), 3);
        // The first failure counts; the second, with no other call answered since, is an outage.
        assert_eq!(app.metric(r#"relay_worker_retries_total{project="default",reason="transient"}"#).await, 1.0);
        assert_eq!(app.metric(r#"relay_worker_retries_total{project="default",reason="api_down"}"#).await, 1.0);
        app.wait_for_metric(r#"relay_enriched_total{project="default"}"#, 1.0).await;
    }

    async fn a_timeout_is_retried(backend: Backend) {
        let app = spawn_app_with(Options { api_timeout: Duration::from_millis(300), ..on(backend) }).await;
        app.polyai.script([Reply::Slow(Duration::from_secs(2))]);
        assert_eq!(app.post_signed(&completed("CAslow")).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CAslow");
        assert_eq!(app.polyai.by_id_requests().len(), 2);
    }

    async fn a_429_waits_for_retry_after_before_the_next_call(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.script([Reply::RateLimited("1")]);
        assert_eq!(app.post_signed(&completed("CA429")).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CA429");
        let requests = app.polyai.by_id_requests();
        assert_eq!(requests.len(), 2);
        let gap = requests[1].at - requests[0].at;
        assert!(gap >= Duration::from_secs(1), "retried after {gap:?}, before Retry-After");
    }

    async fn a_429_asking_for_no_wait_in_a_row_is_waited_longer_each_time(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.script(std::iter::repeat_n(Reply::RateLimited("0"), 6));
        assert_eq!(app.post_signed(&completed("CA429x6")).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CA429x6");
        let requests = app.polyai.by_id_requests();
        assert_eq!(requests.len(), 7);
        // RELAY_RETRY_BASE_DELAY (50 ms here) doubled for each 429 in a row: the sixth pause is
        // 1.6 s, where obeying `Retry-After: 0` alone would have waited 0.1 s each time.
        let last = requests[6].at - requests[5].at;
        assert!(last >= Duration::from_millis(1600), "the sixth 429 in a row was waited {last:?}");
    }

    async fn a_200_whose_body_is_not_json_is_retried_as_a_5xx(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.script([Reply::Html("<html><body>upstream maintenance</body></html>")]);
        assert_eq!(app.post_signed(&completed("CAhtml")).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CAhtml");
        assert_eq!(app.polyai.by_id_requests().len(), 2);
        assert_eq!(app.metric(r#"relay_worker_retries_total{project="default",reason="transient"}"#).await, 1.0);
    }

    async fn a_404_is_retried_while_the_conversation_is_not_ingested(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.script([Reply::Status(404), Reply::Status(404)]);
        assert_eq!(app.post_signed(&completed("CAlate")).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CAlate");
        assert_eq!(app.polyai.by_id_requests().len(), 3);
    }

    async fn a_404_that_persists_is_dead_lettered_after_a_few_attempts(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.always(Reply::Status(404));
        assert_eq!(app.post_signed(&completed("CAgone")).await.status(), 204);
        let dead = app.next_dead_letter().await;
        assert_eq!(dead.attempts.as_deref(), Some("5"));
        assert!(dead.error.unwrap().contains("404"));
        assert!(dead.event_id.starts_with("sha256:"));
        assert_eq!(app.polyai.by_id_requests().len(), 5);
    }

    async fn a_404_after_an_outages_5xx_answers_still_gets_its_own_retries(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        // The API is down for a while, then back before the conversation is ingested.
        let mut replies = vec![Reply::Status(503); 4];
        replies.extend([Reply::Status(404), Reply::Status(404)]);
        app.polyai.script(replies);
        assert_eq!(app.post_signed(&completed("CAafter")).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CAafter");
        assert_eq!(app.polyai.by_id_requests().len(), 7);
    }

    async fn a_400_is_dead_lettered_at_once_with_its_error(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.always(Reply::Status(400));
        assert_eq!(app.post_signed(&completed("CAbad")).await.status(), 204);
        let dead = app.next_dead_letter().await;
        let error = dead.error.unwrap();
        assert!(error.starts_with("400"), "{error}");
        assert!(error.contains("correlation id"), "the correlation id is kept for support: {error}");
        assert_eq!(dead.attempts.as_deref(), Some("1"));
        assert_eq!(dead.event, completed("CAbad").as_bytes(), "the raw event, untouched");
        assert_eq!(app.polyai.by_id_requests().len(), 1);
    }

    async fn a_call_failing_while_the_api_answers_others_is_dead_lettered_after_max_attempts(backend: Backend) {
        let app = spawn_app_with(Options { max_attempts: 2, ..on(backend) }).await;
        app.polyai.script_conversation("CAfails", vec![Reply::Status(502); 100]);
        assert_eq!(app.post_signed(&completed("CAfails")).await.status(), 204);
        // Its first failure counted; another call answered after it makes the next one count.
        app.wait_for_metric(r#"relay_worker_retries_total{project="default",reason="transient"}"#, 1.0).await;
        assert_eq!(app.post_signed(&completed("CAfine")).await.status(), 204);
        assert_eq!(app.next_record().await.json["conversation"]["id"], "CAfine");
        let dead = app.next_dead_letter().await;
        assert_eq!(dead.attempts.as_deref(), Some("2"));
        assert!(dead.error.unwrap().starts_with("502"));
    }

    async fn an_api_answering_nothing_for_longer_than_the_retries_loses_no_event(backend: Backend) {
        let app = spawn_app_with(Options { max_attempts: 2, ..on(backend) }).await;
        app.polyai.always(Reply::Status(503));
        assert_eq!(app.post_signed(&completed("CAout")).await.status(), 204);
        // Counted from the first failure, the second would have dead-lettered it: it waits.
        app.polyai.wait_for_requests(5).await;
        app.polyai.always(Reply::Conversation);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CAout");
        assert_eq!(app.metric(r#"relay_worker_retries_total{project="default",reason="transient"}"#).await, 1.0);
        app.wait_for_metric_at_least(r#"relay_worker_retries_total{project="default",reason="api_down"}"#, 3.0).await;
    }

    async fn a_refused_key_pauses_the_worker_without_losing_the_event_and_resumes_when_accepted(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        app.polyai.always(Reply::Status(401));
        assert_eq!(app.post_signed(&completed("CAkey")).await.status(), 204);

        // Paused: not ready, and the event is back in the queue, not dead-lettered or dropped.
        app.polyai.wait_for_requests(1).await;
        app.wait_for_readiness(503).await;
        app.queue.wait_for_pending(1).await;
        let probes_before = app.polyai.requests().len();
        app.polyai.wait_for_requests(probes_before + 2).await;
        assert_eq!(app.queue.pending().await, 1, "still queued while paused");
        assert_eq!(app.queue.dead_count().await, 0);
        assert!(app.polyai.list_requests().is_empty(), "the refused call is asked again, not the list");

        // The key works again: the probe passes and the event is enriched.
        app.polyai.always(Reply::Conversation);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CAkey");
        app.wait_for_readiness(200).await;
    }

    async fn api_calls_never_exceed_the_concurrency_limit(backend: Backend) {
        let app = spawn_app_with(Options { api_concurrency: 2, ..on(backend) }).await;
        app.polyai.always(Reply::Slow(Duration::from_millis(100)));
        for i in 0..8 {
            assert_eq!(app.post_signed(&completed(&format!("CAc{i}"))).await.status(), 204);
        }
        for _ in 0..8 {
            app.next_record().await;
        }
        assert_eq!(app.polyai.max_in_flight(), 2);
    }

    async fn api_calls_keep_to_the_rate_limit(backend: Backend) {
        let app = spawn_app_with(Options { api_rate: Some(10.0), ..on(backend) }).await;
        for i in 0..5 {
            assert_eq!(app.post_signed(&completed(&format!("CAr{i}"))).await.status(), 204);
        }
        for _ in 0..5 {
            app.next_record().await;
        }
        let requests = app.polyai.by_id_requests();
        let span = requests.last().unwrap().at - requests.first().unwrap().at;
        // The throttle spaces the calls' starts 100 ms apart (400 ms for five); each reaches the
        // fake a variable time after its start, so one interval is left as slack. Unthrottled,
        // the five arrive within a few milliseconds.
        assert!(span >= Duration::from_millis(300), "5 calls at 10/s span about 400 ms, took {span:?}");
    }
}
