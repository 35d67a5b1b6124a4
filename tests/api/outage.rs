//! Broker outages, made by cutting a proxy between the relay and RabbitMQ. Every webhook
//! answered 204 is enriched once the broker is back; while it is away the relay answers 503 in
//! time and reports not ready.

use std::{collections::HashSet, time::Duration};

use crate::{
    broker::{amqp_url, MESSAGE_WAIT},
    fake_polyai::Reply,
    helpers::{completed, spawn_app_with, Options, TestApp},
    proxy::Proxy,
};

pub async fn proxied_app(options: Options) -> (TestApp, Proxy) {
    proxied_app_asking(options, None).await
}

/// As [`proxied_app`], with `query` (`heartbeat=1`, …) on the relay's AMQP URL.
async fn proxied_app_asking(options: Options, query: Option<&str>) -> (TestApp, Proxy) {
    let url = url::Url::parse(&amqp_url()).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672));
    let target = tokio::net::lookup_host(target).await.unwrap().next().unwrap();
    let proxy = Proxy::start(target).await;
    let relay_url = match query {
        Some(query) => format!("{}?{query}", proxy.amqp_url()),
        None => proxy.amqp_url(),
    };
    let app = spawn_app_with(Options { amqp_url: Some(relay_url), ..options }).await;
    (app, proxy)
}

async fn post(app: &TestApp, i: usize) -> (String, u16) {
    let id = format!("CAout{i}");
    (id.clone(), app.post_signed(&completed(&id)).await.status().as_u16())
}

/// Conversation ids of enriched records, read until all of `expected` are in.
/// Fails after [`MESSAGE_WAIT`] naming the ones missing and where events still are.
pub async fn enriched_until(app: &TestApp, expected: &HashSet<String>) {
    let deadline = tokio::time::sleep(MESSAGE_WAIT);
    tokio::pin!(deadline);
    let mut seen = HashSet::new();
    while !expected.is_subset(&seen) {
        tokio::select! {
            record = app.next_record() => {
                seen.insert(record.json["conversation"]["id"].as_str().unwrap().to_owned());
            }
            _ = &mut deadline => {
                let missing: Vec<_> = expected.difference(&seen).collect();
                panic!("never enriched: {missing:?}; {}", app.queue.whereabouts().await);
            }
        }
    }
}

#[tokio::test]
async fn a_broker_cut_mid_stream_loses_no_accepted_event_and_publishing_resumes() {
    let options = Options { ack_deadline: Duration::from_millis(500), ..Options::default() };
    let (app, proxy) = proxied_app(options).await;
    let mut accepted = HashSet::new();
    for i in 0..20 {
        let (id, status) = post(&app, i).await;
        assert_eq!(status, 204);
        accepted.insert(id);
    }

    proxy.cut();
    app.wait_for_readiness(503).await;
    for i in 20..30 {
        let started = std::time::Instant::now();
        let (id, status) = post(&app, i).await;
        assert!(status == 503 || status == 204, "{status}");
        assert!(started.elapsed() < Duration::from_secs(2), "answered within the deadline");
        if status == 204 {
            accepted.insert(id);
        }
    }

    proxy.restore();
    let restored = std::time::Instant::now();
    app.wait_for_readiness(200).await;
    let (id, status) = post(&app, 30).await;
    assert_eq!(status, 204);
    accepted.insert(id);
    assert!(restored.elapsed() < Duration::from_secs(5), "publishing resumed after {:?}", restored.elapsed());
    enriched_until(&app, &accepted).await;
}

#[tokio::test]
async fn a_broker_gone_silent_is_left_after_two_heartbeats_and_publishing_resumes_when_it_answers() {
    // A node frozen, or a network dropping packets without closing anything: the connections stay
    // open and nothing comes back. Heartbeats of 1 s here (the relay asks for 10 s by default).
    let options = Options { ack_deadline: Duration::from_millis(500), ..Options::default() };
    let (app, proxy) = proxied_app_asking(options, Some("heartbeat=1")).await;
    let (first, status) = post(&app, 0).await;
    assert_eq!(status, 204);

    proxy.stall();
    // Nothing tells the relay the broker is gone but the heartbeats it no longer gets.
    app.wait_for_readiness(503).await;
    let (_, status) = post(&app, 1).await;
    assert_eq!(status, 503, "refused while the broker is away (no spool)");

    proxy.resume();
    app.wait_for_readiness(200).await;
    let (second, status) = post(&app, 2).await;
    assert_eq!(status, 204);
    enriched_until(&app, &HashSet::from([first, second])).await;
}

#[tokio::test]
async fn a_cut_between_the_fetch_and_the_publish_loses_nothing() {
    let (app, proxy) = proxied_app(Options::default()).await;
    // The worker fetches, the API takes its time, and the broker goes away meanwhile.
    app.polyai.script([Reply::Slow(Duration::from_millis(800))]);
    assert_eq!(app.post_signed(&completed("CAmid")).await.status(), 204);
    app.polyai.wait_for_requests(1).await;
    proxy.cut();
    app.wait_for_readiness(503).await;
    proxy.restore();
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], "CAmid");
}

#[tokio::test]
async fn the_worker_waits_while_the_broker_is_away_and_resumes_without_a_restart() {
    let (app, proxy) = proxied_app(Options::default()).await;
    proxy.cut();
    app.wait_for_readiness(503).await;
    // Published around the relay while it is cut off: the worker must pick it up once back.
    let channel = app.queue.broker().channel().await;
    channel
        .basic_publish(
            "".into(),
            app.queue.broker().topology.enrich_queue.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            completed("CAback").as_bytes(),
            lapin::BasicProperties::default()
                .with_message_id("evt_back".into())
                .with_type("conversation.completed".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(app.polyai.requests().is_empty());
    proxy.restore();
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], "CAback");
}

#[tokio::test]
async fn a_publish_given_up_at_the_deadline_is_still_seen_through_to_the_brokers_answer() {
    // A broker slow to confirm, not gone: it stays connected (heartbeats of 10 s) and answers
    // after the deadline. lapin would keep each confirm dropped unanswered for as long as the
    // connection lives; the relay waits for it instead, and lets it go once answered.
    let options = Options { worker: false, ack_deadline: Duration::from_millis(300), ..Options::default() };
    let (app, proxy) = proxied_app(options).await;
    proxy.stall();
    let (_, status) = post(&app, 0).await;
    assert_eq!(status, 503, "not confirmed within the deadline (no spool)");
    assert_eq!(app.metric(r#"relay_publish_confirms_total{destination="events",result="timeout"}"#).await, 1.0);

    proxy.resume();
    app.wait_for_metric(r#"relay_publish_confirms_late_total{destination="events",result="ack"}"#, 1.0).await;
    // The copy the broker took after all: PolyAI's retry of the 503 makes it a duplicate.
    assert_eq!(app.queue.pending().await, 1);
}
