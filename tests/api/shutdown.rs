//! A shutdown with requests and enrichments in flight loses nothing that was answered 204.

use std::{collections::HashSet, time::Duration};

use futures_util::future::join_all;
use lapin::options::BasicGetOptions;
use polyai_relay::signature::sign;
use tokio::sync::Notify;

use crate::{
    broker::TestBroker,
    fake_polyai::{FakePolyai, Reply, ACCOUNT, API_KEY, PROJECT},
    helpers::{completed, now, spawn_app_with, Options, SECRET},
    process::RelayProcess,
};

/// Message ids of everything in `queue`, taken off it.
async fn drain_ids(broker: &TestBroker, queue: &str) -> HashSet<String> {
    let channel = broker.channel().await;
    let mut ids = HashSet::new();
    while let Some(message) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        ids.insert(message.delivery.properties.message_id().as_ref().unwrap().to_string());
    }
    ids
}

async fn post_event(http: &reqwest::Client, url: &str, id: String) -> (String, Option<u16>) {
    let body = completed(&format!("CA{id}"));
    let ts = now().to_string();
    let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
    let response = http
        .post(url)
        .header("x-polyai-timestamp", &ts)
        .header("x-polyai-signature", signature)
        .header("x-polyai-event-id", &id)
        .body(body)
        .send()
        .await;
    (id, response.ok().map(|r| r.status().as_u16()))
}

#[tokio::test]
async fn a_shutdown_mid_stream_keeps_every_event_answered_204() {
    let mut app = spawn_app_with(Options { worker: false, ..Options::default() }).await;
    let http = reqwest::Client::new();
    let url = app.url("/polyai-events");
    let first_answer = Notify::new();
    let burst = join_all((0..60).map(|i| {
        let (http, url, first_answer) = (&http, &url, &first_answer);
        async move {
            let result = post_event(http, url, format!("evt-{i}")).await;
            first_answer.notify_one();
            result
        }
    }));
    // The signal lands while most of the burst is still in flight.
    let signal = async {
        first_answer.notified().await;
        app.begin_shutdown();
    };
    let (results, ()) = tokio::join!(burst, signal);
    tokio::time::timeout(Duration::from_secs(10), app.stopped()).await.expect("stopped within 10 s");

    let accepted: HashSet<String> =
        results.into_iter().filter(|(_, status)| *status == Some(204)).map(|(id, _)| id).collect();
    assert!(!accepted.is_empty(), "some requests were answered before the shutdown");
    let enqueued = drain_ids(&app.broker, &app.broker.topology.enrich_queue).await;
    for id in &accepted {
        assert!(enqueued.contains(id), "{id} was answered 204 but is not in the queue");
    }
}

#[tokio::test]
async fn sigterm_with_work_in_flight_exits_0_within_10s_and_loses_nothing() {
    let broker = TestBroker::new(polyai_relay::config::EventTypes::All).await;
    let polyai = FakePolyai::start().await;
    // Slow API answers keep enrichments in flight when the signal arrives.
    polyai.always(Reply::Slow(Duration::from_millis(300)));
    let t = &broker.topology;
    let env = [
        ("POLYAI_WEBHOOK_SECRET", SECRET),
        ("POLYAI_API_KEY", API_KEY),
        ("POLYAI_BASE_URL", &polyai.base_url),
        ("POLYAI_ACCOUNT_ID", ACCOUNT),
        ("POLYAI_PROJECT_ID", PROJECT),
        ("AMQP_URL", &broker.url),
        ("RELAY_EVENTS", "*"),
        ("RELAY_EVENTS_EXCHANGE", &t.events_exchange),
        ("RELAY_ENRICH_QUEUE", &t.enrich_queue),
        ("RELAY_CONVERSATIONS_EXCHANGE", &t.conversations_exchange),
        ("RELAY_CONVERSATIONS_QUEUE", broker.conversations_queue()),
        ("RELAY_DEAD_EXCHANGE", &t.dead_exchange),
        ("RELAY_DEAD_QUEUE", &t.dead_queue),
        ("RELAY_API_CONCURRENCY", "4"),
    ];
    let mut relay = RelayProcess::spawn(&["run"], &env).await;
    let http = reqwest::Client::new();
    let url = relay.url("/polyai-events");
    let mut accepted = HashSet::new();
    // Once ready, a first batch puts enrichments under way.
    relay.wait_ready().await;
    for (id, status) in join_all((0..20).map(|i| post_event(&http, &url, format!("evt-a{i}")))).await {
        assert_eq!(status, Some(204));
        accepted.insert(id);
    }
    polyai.wait_for_requests(1).await;
    // A second batch races the signal.
    let burst = join_all((0..20).map(|i| post_event(&http, &url, format!("evt-b{i}"))));
    let signal = async { relay.terminate() };
    let (results, ()) = tokio::join!(burst, signal);
    accepted.extend(results.into_iter().filter(|(_, s)| *s == Some(204)).map(|(id, _)| id));
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());

    let enriched = drain_ids(&broker, broker.conversations_queue()).await;
    let waiting = drain_ids(&broker, &t.enrich_queue).await;
    for id in &accepted {
        assert!(enriched.contains(id) || waiting.contains(id), "{id} was answered 204 and then lost");
    }
}
