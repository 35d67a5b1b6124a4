//! `dead list` and `dead replay`, through the real binary, on both backends: listing removes
//! nothing and hands nothing back to the queue; a replay lands in the worker's queue and
//! becomes a record with the event's own id; a replay killed halfway loses nothing.

use std::{collections::HashSet, time::Duration};

use lapin::options::BasicGetOptions;
use polyai_relay::{
    config::EventTypes,
    queue::{
        amqp::AmqpPublisher,
        embedded::{EmbeddedQueue, DEAD_FILE as EMBEDDED_DEAD_FILE},
        headers, Destination, Message, Publisher,
    },
    telemetry::Metrics,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{both_backends, TestQueue},
    fake_polyai::{FakePolyai, Reply},
    helpers::{completed, http, post_body},
    poll::poll_until,
    process::{as_refs, relay_command, run_to_exit_with_stdout, RelayProcess},
};

fn types() -> EventTypes {
    EventTypes::Only(vec!["conversation.completed".into()])
}

/// Runs `polyai-relay dead {args}` on the test's queue; returns stdout (the command must succeed).
async fn dead(queue: &TestQueue, args: &[&str]) -> String {
    let env = queue.env();
    let mut all = vec!["dead"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&all, &as_refs(&env)).await;
    assert_eq!(code, Some(0), "dead {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

async fn list_json(queue: &TestQueue) -> Vec<Value> {
    dead(queue, &["list", "--json"]).await.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// Starts `run`, posts one event per id (each answered 204), and waits until all are dead
/// letters (the fake API answers 400: dead-lettered at once); then stops the relay.
async fn dead_letters_through_the_relay(queue: &TestQueue, polyai: &FakePolyai, ids: &[&str]) {
    let events: Vec<(&str, String)> = ids.iter().map(|id| (*id, completed(&format!("CA{id}")))).collect();
    bodies_dead_lettered_through_the_relay(queue, polyai, &events).await;
}

/// [`dead_letters_through_the_relay`], with each event's body given as `(id, body)`.
async fn bodies_dead_lettered_through_the_relay(queue: &TestQueue, polyai: &FakePolyai, events: &[(&str, String)]) {
    let ids: Vec<&str> = events.iter().map(|(id, _)| *id).collect();
    polyai.script(ids.iter().map(|_| Reply::Status(400)));
    let env = queue.relay_env(&polyai.base_url, &[]);
    let mut relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
    relay.wait_ready().await;
    let http = http();
    for (id, body) in events {
        assert_eq!(post_body(&http, &relay.url("/polyai-events"), id, body.clone()).await, Some(204));
    }
    // The relay binary writes them where only a count shows them (taking them would leave nothing
    // for `dead list`): counted until they are all there.
    poll_until(Duration::from_secs(30), || async {
        match queue.dead_count().await {
            count if count >= ids.len() as u64 => Ok(()),
            count => Err(format!("{count} of {} dead-lettered:\n{}", ids.len(), relay.logs())),
        }
    })
    .await;
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(15)).await, Some(0));
}

/// Writes dead letters the way the worker does, through the relay's own publisher.
async fn seed_dead_letters(queue: &TestQueue, ids: &[String]) {
    let message = |id: &String| Message {
        body: completed(&format!("CA{id}")).into_bytes().into(),
        message_id: id.clone(),
        event_type: "conversation.completed".into(),
        timestamp: 1,
        headers: [(headers::ATTEMPTS.to_owned(), "8".to_owned()), (headers::ERROR.to_owned(), "gave up".to_owned())]
            .into(),
    };
    store_dead_letters(queue, ids.iter().map(message).collect()).await;
}

/// Writes one dead letter that is an enriched record, as a return rescued by the relay's
/// publisher makes it (marked [`headers::RECORD`]); returns its body.
async fn seed_dead_record(queue: &TestQueue, id: &str) -> Vec<u8> {
    let body = serde_json::json!({ "schema": 1, "event_id": id, "conversation": { "id": format!("CA{id}") } });
    let body = serde_json::to_vec(&body).unwrap();
    let record = Message {
        body: body.clone().into(),
        message_id: id.to_owned(),
        event_type: "conversation.completed".into(),
        timestamp: 1,
        headers: [
            (headers::RECORD.to_owned(), "true".to_owned()),
            (headers::ERROR.to_owned(), "no queue took it".to_owned()),
            (headers::PROJECT.to_owned(), "main".to_owned()),
        ]
        .into(),
    };
    store_dead_letters(queue, vec![record]).await;
    body
}

/// Stores `letters` as dead letters of `queue`'s backend, in order.
async fn store_dead_letters(queue: &TestQueue, letters: Vec<Message>) {
    let settings = queue.settings(types(), None);
    match &settings.amqp_url {
        Some(url) => {
            let stop = CancellationToken::new();
            let publisher =
                AmqpPublisher::start(url.clone(), settings.topology.clone(), Metrics::isolated(), stop.clone());
            publisher.wait_connected().await;
            for letter in letters {
                publisher.publish(Destination::Dead, letter).await.expect("dead letter stored");
            }
            stop.cancel();
        }
        None => {
            let store = EmbeddedQueue::open(&settings.data_dir, 20).expect("queue opens");
            for letter in letters {
                store.publish(Destination::Dead, letter).await.expect("dead letter stored");
            }
        }
    }
}

/// Event ids still among the dead letters, read without the relay (and taking them away).
async fn remaining_dead_ids(queue: &TestQueue) -> Vec<String> {
    match queue {
        TestQueue::Amqp(broker) => broker.drain_ids(&broker.topology.dead_queue).await.into_iter().collect(),
        TestQueue::Embedded { dir, .. } => EmbeddedQueue::dead_letters_in(&dir.0)
            .expect("readable")
            .into_iter()
            .map(|line| line.message.message_id)
            .collect(),
    }
}

both_backends! {
    async fn dead_list_shows_each_dead_letter_and_removes_none(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let polyai = FakePolyai::start().await;
        dead_letters_through_the_relay(&queue, &polyai, &["evt-d1", "evt-d2", "evt-d3"]).await;

        let listed = list_json(&queue).await;
        let mut ids: Vec<&str> = listed.iter().map(|l| l["event_id"].as_str().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, ["evt-d1", "evt-d2", "evt-d3"]);
        let first = listed.iter().find(|l| l["event_id"] == "evt-d1").unwrap();
        assert_eq!(first["event_type"], "conversation.completed");
        assert_eq!(first["conversation_id"], "CAevt-d1");
        assert!(first["error"].as_str().unwrap().contains("400"), "{first}");
        assert_eq!(first["attempts"], 1);
        let dead_at = first["dead_at"].as_str().expect("dead_at");
        time::OffsetDateTime::parse(dead_at, &time::format_description::well_known::Rfc3339).expect("RFC 3339");

        // Looked at again and again: still all there, in the same order (the order they died).
        for _ in 0..3 {
            assert_eq!(list_json(&queue).await, listed);
        }
        // A limited list shows the oldest and leaves the order as it was.
        let limited = dead(&queue, &["list", "--limit", "2"]).await;
        let shown: Vec<&str> = limited.lines().map(|line| line.split_whitespace().nth(1).unwrap()).collect();
        let oldest: Vec<&str> = listed[..2].iter().map(|l| l["event_id"].as_str().unwrap()).collect();
        assert_eq!(shown, oldest);
        assert_eq!(list_json(&queue).await, listed, "a limited list changed the order");
        assert_eq!(queue.dead_count().await, 3);
        if let TestQueue::Amqp(broker) = &queue {
            // Nothing was handed back to the queue: no message carries a delivery count, which
            // is what RabbitMQ 4's default delivery limit of 20 would count against.
            let channel = broker.channel().await;
            while let Some(got) =
                channel.basic_get(broker.topology.dead_queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
            {
                assert!(!got.delivery.redelivered);
                let count = got.delivery.properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
                let counted = matches!(count, Some(lapin::types::AMQPValue::LongLongInt(n)) if n > 0);
                assert!(!counted, "a listed dead letter was handed back to the queue: x-delivery-count {count:?}");
            }
        }
    }

    async fn a_replayed_dead_letter_whose_conversation_now_answers_becomes_its_record(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let polyai = FakePolyai::start().await;
        dead_letters_through_the_relay(&queue, &polyai, &["evt-r1", "evt-r2"]).await;

        let stdout = dead(&queue, &["replay", "--id", "evt-r2", "--reason", "API fixed"]).await;
        assert!(stdout.contains("replayed 1, left 1"), "{stdout}");
        assert_eq!(queue.dead_count().await, 1, "the other dead letter stays");

        // The API answers 200 now (the script ran out).
        let env = queue.relay_env(&polyai.base_url, &[]);
        let _relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
        let record = queue.next_record().await;
        assert_eq!(record.json["event_id"], "evt-r2");
        assert_eq!(record.json["conversation"]["id"], "CAevt-r2");
        if let Some(delivery) = &record.delivery {
            assert_eq!(delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("evt-r2"));
            assert!(crate::helpers::header(delivery, "x-relay-replayed-at").is_some());
            assert_eq!(crate::helpers::header(delivery, "x-relay-replay-reason").as_deref(), Some("API fixed"));
        }
        assert_eq!(remaining_dead_ids(&queue).await, ["evt-r1"]);
    }

    async fn a_replay_killed_halfway_loses_no_dead_letter(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let ids: Vec<String> = (0..1500).map(|i| format!("evt-k{i}")).collect();
        seed_dead_letters(&queue, &ids).await;

        let env = queue.env();
        let mut command = relay_command(&["dead", "replay", "--all"]);
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut replay = command.spawn().expect("binary starts");
        // The replay is another process, seen only in the queue it fills: counted, often, so the
        // kill lands mid-way.
        poll_until(Duration::from_secs(30), || async {
            match queue.pending().await {
                count if count >= 100 => Ok(()),
                count => Err(format!("the replay never got going: {count} replayed")),
            }
        })
        .await;
        replay.start_kill().expect("SIGKILL");
        replay.wait().await.expect("reaped");

        let left = queue.dead_count().await;
        assert!(left > 0, "killed halfway, not after the end");
        let pending = queue.pending_ids().await;
        let dead: HashSet<String> = remaining_dead_ids(&queue).await.into_iter().collect();
        let everywhere: HashSet<String> = pending.union(&dead).cloned().collect();
        let all: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(everywhere, all, "every dead letter is in the worker's queue or still dead");
    }

    async fn a_replayed_dead_record_goes_back_to_the_records_not_to_the_worker(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let body = seed_dead_record(&queue, "evt-rec1").await;
        seed_dead_letters(&queue, &["evt-ev1".to_owned()]).await;

        let stdout = dead(&queue, &["replay", "--all"]).await;
        assert!(stdout.contains("replayed 2, left 0"), "{stdout}");
        // The record reaches downstream as it was, without the mark or the dead letter's error;
        // only the event goes to the worker, which could not read a record as one.
        let record = queue.next_record().await;
        assert_eq!(record.raw, body, "the record's body, byte for byte");
        if let Some(delivery) = &record.delivery {
            assert_eq!(delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("evt-rec1"));
            assert_eq!(crate::helpers::header(delivery, headers::RECORD), None);
            assert_eq!(crate::helpers::header(delivery, headers::ERROR), None);
            assert_eq!(crate::helpers::header(delivery, headers::PROJECT).as_deref(), Some("main"));
            assert!(crate::helpers::header(delivery, headers::REPLAYED_AT).is_some());
        }
        assert_eq!(queue.pending_ids().await, HashSet::from(["evt-ev1".to_owned()]));
        assert_eq!(queue.dead_count().await, 0);
    }

    async fn a_dry_run_replay_counts_and_moves_nothing(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let ids: Vec<String> = (0..3).map(|i| format!("evt-dry{i}")).collect();
        seed_dead_letters(&queue, &ids).await;
        let stdout = dead(&queue, &["replay", "--id", "evt-dry1", "--dry-run"]).await;
        assert!(stdout.contains("would replay 1, left 3"), "{stdout}");
        assert_eq!(queue.dead_count().await, 3);
        assert_eq!(queue.pending().await, 0);
    }

}

/// A record rescued from a return, replayed while still no queue takes it, stays a dead letter
/// as it was; the replay goes on with the others and says what it left.
#[tokio::test]
async fn a_dead_record_no_queue_takes_yet_stays_dead_and_the_replay_goes_on() {
    let queue = TestQueue::new(crate::backend::Backend::Amqp, types()).await;
    let body = seed_dead_record(&queue, "evt-rec2").await;
    seed_dead_letters(&queue, &["evt-ev2".to_owned()]).await;
    let TestQueue::Amqp(broker) = &queue else { unreachable!() };
    let topology = &broker.topology;
    // The replay's conversations exchange one of its own, with nothing bound to it: no queue,
    // no log (deleting the test's own could race with what declared them).
    let unbound = format!("{}-unbound", topology.conversations_exchange);
    let mut env = queue.env();
    let replaced = ["RELAY_CONVERSATIONS_EXCHANGE", "RELAY_CONVERSATIONS_QUEUE", "RELAY_CONVERSATIONS_LOG"];
    env.retain(|(name, _)| !replaced.contains(&name.as_str()));
    env.extend([
        ("RELAY_CONVERSATIONS_EXCHANGE".into(), unbound.clone()),
        ("RELAY_CONVERSATIONS_QUEUE".into(), "off".into()),
        ("RELAY_CONVERSATIONS_LOG".into(), "off".into()),
    ]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["dead", "replay", "--all"], &as_refs(&env)).await;
    broker.channel().await.exchange_delete(unbound.as_str().into(), Default::default()).await.expect("deleted");

    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("replayed 1, left 1"), "{stdout}");
    assert!(stderr.contains("evt-rec2") && stderr.contains("no queue takes it yet"), "{stderr}");
    assert_eq!(queue.pending_ids().await, HashSet::from(["evt-ev2".to_owned()]));
    let kept = broker.next_message(&topology.dead_queue).await;
    assert_eq!(kept.data, body, "kept byte for byte");
    assert_eq!(crate::helpers::header(&kept, headers::RECORD).as_deref(), Some("true"), "still a record");
}

#[tokio::test]
async fn an_embedded_replay_refuses_while_the_relay_owns_the_queue() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    seed_dead_letters(&queue, &["evt-busy".to_owned()]).await;
    let polyai = FakePolyai::start().await;
    let env = queue.relay_env(&polyai.base_url, &[]);
    let relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["dead", "replay", "--all"], &as_refs(&queue.env())).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    // Listing works beside it, and the dead letter is still there.
    assert!(dead(&queue, &["list"]).await.contains("evt-busy"));
    drop(relay);
}

#[tokio::test]
async fn a_message_the_broker_dead_lettered_is_listed_with_the_brokers_reason_and_time() {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicNackOptions};

    let app = crate::helpers::spawn_app_with(crate::helpers::Options { worker: false, ..Default::default() }).await;
    assert_eq!(app.post_signed(&completed("CAcrashloop")).await.status(), 204);
    let broker = app.queue.broker();
    // A worker that crashes on it every time, until the broker's delivery limit gives up on it.
    let channel = broker.channel().await;
    let queue = broker.topology.enrich_queue.as_str();
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), lapin::types::FieldTable::default())
        .await
        .unwrap();
    for _ in 0..=broker.topology.delivery_limit {
        let delivery = consumer.next().await.expect("delivered").expect("no error");
        delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    }
    let _ = channel.close(200, "done".into()).await;
    // The broker dead-letters it on its own and tells no client: its count is looked at until then
    // (taking the letter would leave nothing for `dead list`).
    poll_until(Duration::from_secs(30), || async {
        match app.queue.dead_count().await {
            0 => Err("never dead-lettered".to_owned()),
            _ => Ok(()),
        }
    })
    .await;

    let listed = list_json(&app.queue).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["conversation_id"], "CAcrashloop");
    assert!(listed[0]["error"].as_str().unwrap().contains("delivery_limit"), "{}", listed[0]);
    assert!(listed[0]["dead_at"].is_string(), "{}", listed[0]);
}

#[tokio::test]
async fn an_embedded_dead_letter_is_replayed_with_the_webhook_body_byte_for_byte() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    let polyai = FakePolyai::start().await;
    // Keys out of order, a trailing zero, an integer past u64 and f64: all a JSON value rewrites.
    let body = r#"{"type":"conversation.completed","zeta":1.50,"data":{"conversation_id":"CAbytes","environment":"live"},"alpha":12345678901234567890123}"#;
    bodies_dead_lettered_through_the_relay(&queue, &polyai, &[("evt-bytes", body.to_owned())]).await;
    assert!(dead(&queue, &["replay", "--id", "evt-bytes"]).await.contains("replayed 1, left 0"));

    // The API answers 200 now (the script ran out).
    let env = queue.relay_env(&polyai.base_url, &[]);
    let _relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
    let record = queue.next_record().await;
    // Read raw: parsed into a value, the event would be rewritten just as the bug did.
    let fields: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&record.raw).expect("record is JSON");
    assert_eq!(fields["event"].get(), body);
}

#[tokio::test]
async fn an_embedded_dead_list_shows_the_letters_around_a_line_torn_inside_a_character() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    seed_dead_letters(&queue, &["evt-t1".to_owned()]).await;
    let TestQueue::Embedded { dir, .. } = &queue else { unreachable!("an embedded queue") };
    // What a crash or a full disk leaves: part of a line, cut inside "ë", with no newline.
    let mut file = std::fs::OpenOptions::new().append(true).open(dir.0.join(EMBEDDED_DEAD_FILE)).expect("dead.jsonl");
    std::io::Write::write_all(&mut file, b"{\"event_id\":\"evt-torn\",\"caller\":\"Zo\xc3").expect("written");
    seed_dead_letters(&queue, &["evt-t2".to_owned()]).await;

    let listed = dead(&queue, &["list"]).await;
    assert!(listed.contains("evt-t1") && listed.contains("evt-t2"), "{listed}");
    assert!(!listed.contains("evt-torn"), "{listed}");
    assert!(dead(&queue, &["replay", "--all"]).await.contains("replayed 2, left 0"));
}
