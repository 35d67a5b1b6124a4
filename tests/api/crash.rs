//! A killed process (SIGKILL: no drain, no goodbye) loses nothing it answered 204: after a
//! restart every such event is enriched. Duplicates are allowed; losses are not.

use std::{collections::HashSet, time::Duration};

use futures_util::{stream, StreamExt};
use polyai_relay::{config::EventTypes, signature::sign};

use crate::{
    backend::{both_backends, TestQueue},
    fake_polyai::{FakePolyai, Reply},
    helpers::{completed, http, post_event, SECRET},
    process::{as_refs, RelayProcess},
};

async fn start(env: &[(String, String)]) -> RelayProcess {
    let env = as_refs(env);
    let relay = RelayProcess::spawn(&["run"], &env).await;
    relay.wait_ready().await;
    relay
}

/// Posts events one after another (4 at a time) until `kill_after` were accepted, then kills
/// the relay while the rest are in flight; returns the ids answered 204.
async fn stream_then_kill(relay: &mut RelayProcess, total: usize, kill_after: usize) -> HashSet<String> {
    let http = http();
    let url = relay.url("/polyai-events");
    let mut accepted = HashSet::new();
    let mut responses = stream::iter(0..total)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move { post_event(&http, &url, format!("evt-{i}")).await }
        })
        .buffer_unordered(4);
    let mut killed = false;
    while let Some((id, status)) = responses.next().await {
        if status == Some(204) {
            accepted.insert(id);
        }
        if !killed && accepted.len() >= kill_after {
            relay.child.start_kill().expect("SIGKILL");
            killed = true;
        }
    }
    assert!(killed, "the relay was killed mid-stream");
    relay.child.wait().await.expect("reaped");
    accepted
}

/// Reads enriched records, duplicates and all, until every event of `expected` has one.
pub async fn wait_until_enriched(queue: &TestQueue, expected: &HashSet<String>) {
    let mut seen = HashSet::new();
    while !expected.is_subset(&seen) {
        let record = queue.next_record().await;
        seen.insert(record.json["event_id"].as_str().expect("an event id").to_owned());
    }
}

both_backends! {
    async fn a_relay_killed_mid_stream_enriches_every_accepted_event_after_a_restart(backend: Backend) {
        let queue = TestQueue::new(backend, EventTypes::Only(vec!["conversation.completed".into()])).await;
        let polyai = FakePolyai::start().await;
        // Slow answers keep enrichments between fetch and ack when the kill lands.
        polyai.always(Reply::Slow(Duration::from_millis(150)));
        let env = queue.relay_env(&polyai.base_url, &[("RELAY_API_CONCURRENCY", "4")]);

        let mut relay = start(&env).await;
        let accepted = stream_then_kill(&mut relay, 60, 20).await;
        assert!(accepted.len() >= 20);

        let _restarted = start(&env).await;
        wait_until_enriched(&queue, &accepted).await;
    }

    async fn a_worker_killed_between_the_fetch_and_the_ack_enriches_the_event_after_a_restart(backend: Backend) {
        let queue = TestQueue::new(backend, EventTypes::Only(vec!["conversation.completed".into()])).await;
        let polyai = FakePolyai::start().await;
        polyai.script([Reply::Slow(Duration::from_secs(30))]);
        let env = queue.relay_env(&polyai.base_url, &[("RELAY_API_CONCURRENCY", "4")]);

        let mut relay = start(&env).await;
        let http = http();
        let body = completed("CAkilled");
        let signature = sign(SECRET.as_bytes(), None, body.as_bytes());
        let response =
            http.post(relay.url("/polyai-events")).header("x-polyai-signature", signature).body(body).send().await.unwrap();
        assert_eq!(response.status(), 204);
        // The worker has fetched and is waiting for the answer: kill it there.
        polyai.wait_for_requests(1).await;
        relay.child.start_kill().expect("SIGKILL");
        relay.child.wait().await.expect("reaped");

        let _restarted = start(&env).await;
        let record = queue.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CAkilled");
    }
}
