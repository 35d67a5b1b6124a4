//! The spool (RELAY_SPOOL_DIR) with RabbitMQ cut off behind a proxy: webhooks keep being answered
//! 204 from the local spool, which drains by itself, oldest first, once the broker is back.

use std::{collections::HashSet, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use polyai_relay::{config::SpoolSettings, queue::embedded::EmbeddedQueue};

use crate::{
    backend::TempDir,
    helpers::{completed, Options, TestApp},
    outage::{enriched_until, proxied_app},
};

const DEADLINE: Duration = Duration::from_millis(600);

fn spooling(dir: &TempDir, max_bytes: u64) -> Options {
    let spool = SpoolSettings { dir: dir.0.join("spool"), max_bytes };
    Options { ack_deadline: DEADLINE, spool: Some(spool), ..Options::default() }
}

/// Posts a `conversation.completed` about `id`; its status and `X-Relay-Outcome`.
async fn post(app: &TestApp, id: &str) -> (u16, Option<String>) {
    let started = std::time::Instant::now();
    let response = app.post_signed(&completed(id)).await;
    assert!(started.elapsed() < DEADLINE + Duration::from_secs(1), "answered after {:?}", started.elapsed());
    let outcome = response.headers().get("x-relay-outcome").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), outcome)
}

/// Posts until one is answered from the spool: the relay has noticed the cut (or the broker's
/// silence). Every answer on the way must be a 204 (a publish that still went through) or a spool.
async fn post_until_spooled(app: &TestApp, prefix: &str, accepted: &mut HashSet<String>) {
    for i in 0..50 {
        let id = format!("{prefix}{i}");
        let (status, outcome) = post(app, &id).await;
        assert_eq!(status, 204, "{id}");
        accepted.insert(id);
        if outcome.as_deref() == Some("spooled") {
            return;
        }
    }
    panic!("nothing was spooled after the cut");
}

fn spooled_count(dir: &TempDir) -> u64 {
    EmbeddedQueue::count_in(&dir.0.join("spool")).expect("spool readable")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn every_webhook_answered_during_a_broker_cut_is_spooled_and_enriched_once_it_is_back() {
    let dir = TempDir::new();
    let (app, proxy) = proxied_app(spooling(&dir, 1 << 30)).await;
    let mut accepted: HashSet<String> = app.post_until_straight("CAbefore").await.into_iter().collect();
    app.wait_for_spool(0).await;

    proxy.cut();
    post_until_spooled(&app, "CAcut", &mut accepted).await;
    let before = spooled_count(&dir);
    for i in 0..20 {
        let id = format!("CAspooled{i}");
        assert_eq!(post(&app, &id).await, (204, Some("spooled".to_owned())), "{id}");
        accepted.insert(id);
    }
    assert_eq!(spooled_count(&dir), before + 20);
    // This relay's own /metrics says so: what was spooled, less what drained before the cut
    // took hold, is what the spool holds.
    assert_eq!(app.metric("relay_spool_events").await, (before + 20) as f64);
    let (spooled, drained) = (app.metric("relay_spooled_total").await, app.metric("relay_spool_drained_total").await);
    assert_eq!(spooled - drained, (before + 20) as f64);
    assert_eq!(app.admin_get("/readyz").await.status(), 200, "ready while the spool accepts");
    let spool = dir.0.join("spool");
    assert_eq!(mode(&spool), 0o700);
    for file in std::fs::read_dir(&spool).unwrap() {
        let file = file.unwrap().path();
        assert_eq!(mode(&file), 0o600, "{} is owner-only", file.display());
    }

    proxy.restore();
    app.wait_for_spool(0).await;
    accepted.extend(app.post_until_straight("CAafter").await);
    enriched_until(&app, &accepted).await;
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after_and_the_receiver_turns_unready() {
    let dir = TempDir::new();
    // Room for a few events only.
    let (app, proxy) = proxied_app(spooling(&dir, 1_000)).await;
    proxy.cut();
    let mut accepted = HashSet::new();
    post_until_spooled(&app, "CAfill", &mut accepted).await;
    let mut refused = None;
    for i in 0..20 {
        let response = app.post_signed(&completed(&format!("CAfull{i}"))).await;
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 204);
        accepted.insert(format!("CAfull{i}"));
    }
    let refused = refused.expect("a full spool refuses");
    assert_eq!(refused.headers()["retry-after"], "5");
    app.wait_for_readiness(503).await;
    let held = spooled_count(&dir);
    assert_eq!(held as usize, accepted.len(), "every 204 is in the spool");

    proxy.restore();
    app.wait_for_readiness(200).await;
    app.wait_for_spool(0).await;
    enriched_until(&app, &accepted).await;
}

#[tokio::test]
async fn the_spool_drains_oldest_first_with_message_ids_and_headers_kept() {
    let dir = TempDir::new();
    let (app, proxy) = proxied_app(Options { worker: false, ..spooling(&dir, 1 << 30) }).await;
    proxy.cut();
    let mut accepted = HashSet::new();
    post_until_spooled(&app, "CAwarm", &mut accepted).await;
    let (before, total) = (spooled_count(&dir), 200);
    for i in 0..total {
        assert_eq!(post(&app, &format!("CAorder{i}")).await.0, 204);
    }
    assert_eq!(spooled_count(&dir), before + total as u64);

    proxy.restore();
    app.wait_for_spool(0).await;
    // The raw events, in the order the broker queued them.
    let broker = app.queue.broker();
    let channel = broker.channel().await;
    let mut order = Vec::new();
    let get = lapin::options::BasicGetOptions { no_ack: true };
    while let Some(message) = channel.basic_get(broker.topology.enrich_queue.as_str().into(), get).await.unwrap() {
        let delivery = message.delivery;
        let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        let properties = &delivery.properties;
        let message_id = properties.message_id().as_ref().unwrap().to_string();
        assert_eq!(message_id, format!("sha256:{}", sha256_hex(&delivery.data)), "the event id is kept");
        assert_eq!(properties.kind().as_ref().unwrap().as_str(), "conversation.completed");
        for header in ["x-relay-signature-scheme", "x-relay-received-at", "x-polyai-timestamp"] {
            assert!(crate::helpers::header(&delivery, header).is_some(), "{header} kept");
        }
        let id = event["data"]["conversation_id"].as_str().unwrap().to_owned();
        if let Some(index) = id.strip_prefix("CAorder") {
            order.push(index.parse::<usize>().unwrap());
        }
    }
    assert_eq!(order.len(), total, "each spooled event queued once");
    // Drained in batches of 64: an event may overtake another of its own batch, never an older batch.
    let mut newest = 0;
    for (position, index) in order.iter().enumerate() {
        assert!(index + 64 > newest, "event {index} queued at {position}, after event {newest}: {order:?}");
        newest = newest.max(*index);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
