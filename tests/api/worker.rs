//! Each row of the worker's retry table (design §5), on the real broker.

use std::time::Duration;

use crate::{
    fake_polyai::Reply,
    helpers::{completed, header, spawn_app, spawn_app_with, Options},
};

#[tokio::test]
async fn a_5xx_is_retried_with_backoff_until_it_succeeds() {
    let app = spawn_app().await;
    app.polyai.script([Reply::Status(503), Reply::Status(500)]);
    assert_eq!(app.post_signed(&completed("CA5xx")).await.status(), 204);
    let (record, _) = app.next_record().await;
    assert_eq!(record["conversation"]["id"], "CA5xx");
    assert_eq!(app.polyai.by_id_requests().len(), 3);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"relay_worker_retries_total{reason="transient"}"#), "{metrics}");
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let app = spawn_app_with(Options { api_timeout: Duration::from_millis(300), ..Options::default() }).await;
    app.polyai.script([Reply::Slow(Duration::from_secs(2))]);
    assert_eq!(app.post_signed(&completed("CAslow")).await.status(), 204);
    let (record, _) = app.next_record().await;
    assert_eq!(record["conversation"]["id"], "CAslow");
    assert_eq!(app.polyai.by_id_requests().len(), 2);
}

#[tokio::test]
async fn a_429_waits_for_retry_after_before_the_next_call() {
    let app = spawn_app().await;
    app.polyai.script([Reply::RateLimited("1")]);
    assert_eq!(app.post_signed(&completed("CA429")).await.status(), 204);
    let (record, _) = app.next_record().await;
    assert_eq!(record["conversation"]["id"], "CA429");
    let requests = app.polyai.by_id_requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}, before Retry-After");
}

#[tokio::test]
async fn a_404_is_retried_while_the_conversation_is_not_ingested() {
    let app = spawn_app().await;
    app.polyai.script([Reply::Status(404), Reply::Status(404)]);
    assert_eq!(app.post_signed(&completed("CAlate")).await.status(), 204);
    let (record, _) = app.next_record().await;
    assert_eq!(record["conversation"]["id"], "CAlate");
    assert_eq!(app.polyai.by_id_requests().len(), 3);
}

#[tokio::test]
async fn a_404_that_persists_is_dead_lettered_after_a_few_attempts() {
    let app = spawn_app().await;
    app.polyai.always(Reply::Status(404));
    assert_eq!(app.post_signed(&completed("CAgone")).await.status(), 204);
    let dead = app.next_dead_letter().await;
    assert_eq!(header(&dead, "x-relay-attempts").as_deref(), Some("5"));
    assert!(header(&dead, "x-relay-error").unwrap().contains("404"));
    assert_eq!(dead.properties.message_id().as_ref().unwrap().as_str().len(), 71);
    assert_eq!(app.polyai.by_id_requests().len(), 5);
}

#[tokio::test]
async fn a_400_is_dead_lettered_at_once_with_its_error() {
    let app = spawn_app().await;
    app.polyai.always(Reply::Status(400));
    assert_eq!(app.post_signed(&completed("CAbad")).await.status(), 204);
    let dead = app.next_dead_letter().await;
    let error = header(&dead, "x-relay-error").unwrap();
    assert!(error.starts_with("400"), "{error}");
    assert!(error.contains("correlation id"), "the correlation id is kept for support: {error}");
    assert_eq!(header(&dead, "x-relay-attempts").as_deref(), Some("1"));
    assert_eq!(dead.data, completed("CAbad").as_bytes(), "the raw event, untouched");
    assert_eq!(app.polyai.by_id_requests().len(), 1);
}

#[tokio::test]
async fn after_max_attempts_a_failing_event_is_dead_lettered() {
    let app = spawn_app_with(Options { max_attempts: 3, ..Options::default() }).await;
    app.polyai.always(Reply::Status(502));
    assert_eq!(app.post_signed(&completed("CAdown")).await.status(), 204);
    let dead = app.next_dead_letter().await;
    assert_eq!(header(&dead, "x-relay-attempts").as_deref(), Some("3"));
    assert!(header(&dead, "x-relay-error").unwrap().starts_with("502"));
    assert_eq!(app.polyai.by_id_requests().len(), 3);
}

#[tokio::test]
async fn a_refused_key_pauses_the_worker_without_losing_the_event_and_it_resumes_when_accepted() {
    let app = spawn_app().await;
    app.polyai.always(Reply::Status(401));
    app.polyai.probe_answers(Reply::Status(401));
    assert_eq!(app.post_signed(&completed("CAkey")).await.status(), 204);

    // Paused: not ready, and the event is back in the queue, not dead-lettered or dropped.
    app.polyai.wait_for_requests(1).await;
    app.wait_for_readiness(503).await;
    app.broker.wait_for_count(&app.broker.topology.enrich_queue, 1).await;
    assert_eq!(app.broker.ready_count(&app.broker.topology.dead_queue).await, 0);
    let probes_before = app.polyai.requests().len();
    app.polyai.wait_for_requests(probes_before + 2).await;
    assert_eq!(app.broker.ready_count(&app.broker.topology.enrich_queue).await, 1, "still queued while paused");

    // The key works again: the probe passes and the event is enriched.
    app.polyai.always(Reply::Conversation);
    app.polyai.probe_answers(Reply::Json(serde_json::json!({"conversations": [], "cursor": null})));
    let (record, _) = app.next_record().await;
    assert_eq!(record["conversation"]["id"], "CAkey");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn api_calls_never_exceed_the_concurrency_limit() {
    let app = spawn_app_with(Options { api_concurrency: 2, ..Options::default() }).await;
    app.polyai.always(Reply::Slow(Duration::from_millis(100)));
    for i in 0..8 {
        assert_eq!(app.post_signed(&completed(&format!("CAc{i}"))).await.status(), 204);
    }
    for _ in 0..8 {
        app.next_record().await;
    }
    assert_eq!(app.polyai.max_in_flight(), 2);
}

#[tokio::test]
async fn api_calls_keep_to_the_rate_limit() {
    let app = spawn_app_with(Options { api_rate: Some(10.0), ..Options::default() }).await;
    for i in 0..5 {
        assert_eq!(app.post_signed(&completed(&format!("CAr{i}"))).await.status(), 204);
    }
    for _ in 0..5 {
        app.next_record().await;
    }
    let requests = app.polyai.by_id_requests();
    let span = requests.last().unwrap().at - requests.first().unwrap().at;
    assert!(span >= Duration::from_millis(390), "5 calls at 10/s span at least 400 ms, took {span:?}");
}
