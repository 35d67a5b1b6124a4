//! Reconciliation through the real binary: exactly the finished calls no webhook delivered
//! become records (`reconcile:{id}`), once, whether run by hand or by the worker's loop, across
//! restarts and with two workers.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use lapin::{
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Connection, ConnectionProperties,
};
use polyai_relay::{
    config::EventTypes,
    queue::{embedded::CONVERSATIONS_FILE, ledger::WITHDRAWN_TYPE},
};
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    backend::{both_backends, TestQueue},
    broker::{amqp_url, Policy},
    fake_polyai::{conversation, FakePolyai, Reply},
    helpers::{completed, http, post_body, post_event, spawn_app_with, Options},
    poll::poll_until,
    process::{as_refs, run_to_exit_with_stdout, RelayProcess},
};

fn types() -> EventTypes {
    EventTypes::Only(vec!["conversation.completed".into()])
}

/// A listed call that started `ago` before now and lasted `seconds`.
fn call(id: &str, ago: Duration, seconds: u64, environment: &str, in_progress: bool) -> Value {
    let mut value = conversation(id);
    let started = OffsetDateTime::now_utc() - ago;
    value["started_at"] = json!(started.format(&Rfc3339).unwrap());
    value["total_duration"] = json!(seconds);
    value["environment"] = json!(environment);
    value["in_progress"] = json!(in_progress);
    value
}

/// A listed call whose duration the API left out: it may have ended moments ago.
fn without_duration(mut call: Value) -> Value {
    call.as_object_mut().unwrap().remove("total_duration");
    call
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn page(calls: Vec<Value>, cursor: Option<&str>) -> Reply {
    Reply::Json(json!({"conversations": calls, "cursor": cursor}))
}

/// Every record written so far as (event id, routing key where known), duplicates kept.
async fn records(queue: &TestQueue) -> Vec<(String, Option<String>)> {
    match queue {
        TestQueue::Amqp(broker) => {
            let channel = broker.channel().await;
            let mut all = Vec::new();
            while let Some(got) =
                channel.basic_get(broker.conversations_queue().into(), BasicGetOptions { no_ack: true }).await.unwrap()
            {
                let record: Value = serde_json::from_slice(&got.delivery.data).unwrap();
                all.push((record["event_id"].as_str().unwrap().to_owned(), Some(got.delivery.routing_key.to_string())));
            }
            all
        }
        TestQueue::Embedded { dir, .. } => std::fs::read_to_string(dir.0.join(CONVERSATIONS_FILE))
            .unwrap_or_default()
            .lines()
            .map(|l| (serde_json::from_str::<Value>(l).unwrap()["event_id"].as_str().unwrap().to_owned(), None))
            .collect(),
    }
}

async fn stop(mut relay: RelayProcess) {
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(15)).await, Some(0), "{}", relay.logs());
}

/// Waits until the fake has had `n` list requests in all.
async fn wait_for_lists(polyai: &FakePolyai, n: usize) {
    polyai.wait_for_list_requests(n, Duration::from_secs(60)).await;
}

/// The calls of the loop tests: all finished hours ago, none delivered by a webhook.
fn missing_calls() -> Reply {
    page(vec![call("CAloop1", hours(2), 60, "live", false), call("CAloop2", hours(3), 90, "live", false)], None)
}

both_backends! {
    async fn reconcile_publishes_exactly_the_finished_calls_no_webhook_delivered_and_nothing_on_a_second_run(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let polyai = FakePolyai::start().await;
        let env = queue.relay_env(&polyai.base_url, &[]);

        // One call arrived by webhook and became a record; another was accepted and dead-lettered.
        let relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
        relay.wait_ready().await;
        let http = http();
        assert_eq!(post_event(&http, &relay.url("/polyai-events"), "evt-a".into()).await.1, Some(204));
        assert_eq!(queue.next_record().await.json["event_id"], "evt-a");
        polyai.script([Reply::Status(400)]);
        assert_eq!(post_event(&http, &relay.url("/polyai-events"), "evt-g".into()).await.1, Some(204));
        queue.next_dead_letter().await;
        stop(relay).await;

        let listed = || {
            [
                page(
                    vec![
                        call("CAevt-a", hours(2), 60, "live", false),
                        call("CAmissing1", hours(3), 120, "live", false),
                        call("CAbusy", hours(1), 0, "live", true),
                        call("CAsandbox", hours(2), 60, "sandbox", false),
                    ],
                    Some("page-2"),
                ),
                page(
                    vec![
                        call("CArecent", Duration::from_secs(300), 60, "live", false),
                        without_duration(call("CAundated", Duration::from_secs(300), 0, "live", false)),
                        call("CAevt-g", hours(2), 60, "live", false),
                        call("CAmissing2", hours(5), 30, "live", false),
                    ],
                    None,
                ),
            ]
        };
        polyai.script_list(listed());
        let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("reconciled 2, 2 already known, 1 in progress, 2 finished within the settle time, 1 in other environments"), "{stdout}");
        let lists = polyai.list_requests();
        assert!(lists[0].query.contains("client_env=live"), "{}", lists[0].query);
        assert!(lists[1].query.contains("cursor=page-2"), "{}", lists[1].query);

        // Run again before the worker took them: they are known already.
        polyai.script_list(listed());
        let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("reconciled 0, 4 already known"), "{stdout}");

        let relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
        let mut reconciled = Vec::new();
        for _ in 0..2 {
            let record = queue.next_record().await;
            assert_eq!(record.json["event_type"], "conversation.reconciled");
            let id = record.json["conversation"]["id"].as_str().unwrap().to_owned();
            assert_eq!(record.json["event_id"], format!("reconcile:{id}"));
            assert_eq!(
                record.json["event"],
                json!({"type": "conversation.reconciled", "data": {"conversation_id": id, "environment": "live"}})
            );
            if let Some(delivery) = &record.delivery {
                assert_eq!(delivery.routing_key.as_str(), "conversation.reconciled");
                assert_eq!(delivery.properties.message_id().as_ref().unwrap().as_str(), format!("reconcile:{id}"));
            }
            reconciled.push(id);
        }
        reconciled.sort();
        assert_eq!(reconciled, ["CAmissing1", "CAmissing2"]);
        queue.wait_for_pending(0).await;
        stop(relay).await;
        assert_eq!(queue.pending().await, 0);
        // Nothing beyond the webhook's record and the two reconciled ones.
        let mut left: Vec<String> = records(&queue).await.into_iter().map(|(id, _)| id).collect();
        left.sort();
        match &queue {
            TestQueue::Amqp(_) => assert!(left.is_empty(), "{left:?}"),
            TestQueue::Embedded { .. } => {
                assert_eq!(left, ["evt-a", "reconcile:CAmissing1", "reconcile:CAmissing2"])
            }
        }
    }

    async fn the_reconcile_loop_publishes_nothing_twice_across_a_worker_restart(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let polyai = FakePolyai::start().await;
        polyai.probe_answers(missing_calls());
        let env = queue.relay_env(&polyai.base_url, &[("RELAY_RECONCILE_EVERY", "100ms")]);

        let relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
        wait_for_lists(&polyai, 3).await;
        queue.wait_for_pending(0).await;

        // A webhook arrives for another call, which the list then shows too: the passes that
        // follow (reading only what the log gained since) know it. The list shows it only from
        // the second pass that lists after the webhook was accepted: the first may have read the
        // log before the webhook, and a call listed but not known is one to reconcile.
        let http = http();
        assert_eq!(post_event(&http, &relay.url("/polyai-events"), "evt-hook".into()).await.1, Some(204));
        wait_for_lists(&polyai, polyai.list_requests().len() + 2).await;
        let mut calls = vec![call("CAevt-hook", hours(1), 60, "live", false)];
        if let Reply::Json(listed) = missing_calls() {
            calls.extend(listed["conversations"].as_array().unwrap().iter().cloned());
        }
        polyai.probe_answers(page(calls, None));
        wait_for_lists(&polyai, polyai.list_requests().len() + 3).await;
        queue.wait_for_pending(0).await;
        stop(relay).await;
        let before = polyai.list_requests().len();

        let relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
        // Two whole passes after the restart.
        wait_for_lists(&polyai, before + 3).await;
        stop(relay).await;
        assert_eq!(queue.pending().await, 0);
        let mut ids: Vec<String> = records(&queue).await.into_iter().map(|(id, _)| id).collect();
        ids.sort();
        assert_eq!(ids, ["evt-hook", "reconcile:CAloop1", "reconcile:CAloop2"], "each once");
    }

    async fn a_call_whose_handoff_alone_arrived_is_reconciled_once_it_finished(backend: Backend) {
        let types = EventTypes::Only(vec!["conversation.completed".into(), "handoff.created".into()]);
        let queue = TestQueue::new(backend, types).await;
        let polyai = FakePolyai::start().await;
        let env = queue.relay_env(&polyai.base_url, &[]);

        // The handoff came mid-call and became a record; the call's completion never came.
        let relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
        relay.wait_ready().await;
        let handoff = json!({"type": "handoff.created", "data": {"conversation_id": "CAhanded", "environment": "live"}});
        assert_eq!(post_body(&http(), &relay.url("/polyai-events"), "evt-handoff", handoff.to_string()).await, Some(204));
        assert_eq!(queue.next_record().await.json["event_id"], "evt-handoff");
        stop(relay).await;

        polyai.script_list([page(vec![call("CAhanded", hours(2), 600, "live", false)], None)]);
        let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("reconciled 1, 0 already known"), "{stdout}");
        // Reconciled, it is known: the next pass sends nothing.
        polyai.script_list([page(vec![call("CAhanded", hours(2), 600, "live", false)], None)]);
        let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("reconciled 0, 1 already known"), "{stdout}");
    }

    async fn a_dry_run_lists_the_missing_calls_and_puts_nothing_in_the_queue(backend: Backend) {
        let queue = TestQueue::new(backend, types()).await;
        let polyai = FakePolyai::start().await;
        polyai.script_list([missing_calls()]);
        let env = queue.relay_env(&polyai.base_url, &[]);
        let (code, stdout, stderr) =
            run_to_exit_with_stdout(&["reconcile", "--since", "24h", "--dry-run"], &as_refs(&env)).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("would reconcile CAloop1") && stdout.contains("would reconcile 2,"), "{stdout}");
        assert_eq!(queue.pending().await, 0);
    }

}

/// A relay that forwards no `conversation.completed` would get a record of every call from its
/// reconciliation: the loop stays off, with a warning, and the worker runs on.
#[tokio::test]
async fn reconciliation_stays_off_where_no_project_forwards_a_calls_end() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    let polyai = FakePolyai::start().await;
    polyai.probe_answers(missing_calls());
    let env =
        queue.relay_env(&polyai.base_url, &[("RELAY_RECONCILE_EVERY", "100ms"), ("RELAY_EVENTS", "handoff.created")]);
    let relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
    let logs = relay.wait_for_log("reconciliation is off", Duration::from_secs(20)).await;
    assert!(logs.contains("project `default`: it forwards no conversation.completed"), "{logs}");
    relay.wait_ready().await;
    stop(relay).await;
    assert!(polyai.list_requests().is_empty(), "the loop never ran");
}

#[tokio::test]
async fn two_workers_reconciling_publish_each_missing_call_once() {
    let queue = TestQueue::new(crate::backend::Backend::Amqp, types()).await;
    let polyai = FakePolyai::start().await;
    polyai.probe_answers(missing_calls());
    // Slow lists: without a single reconciler, both would read the ledger before either wrote.
    polyai.delay_lists(Duration::from_millis(300));
    let env = queue.relay_env(&polyai.base_url, &[("RELAY_RECONCILE_EVERY", "100ms")]);

    let first = RelayProcess::spawn(&["work"], &as_refs(&env)).await;
    let second = RelayProcess::spawn(&["work"], &as_refs(&env)).await;
    wait_for_lists(&polyai, 4).await;
    queue.wait_for_pending(0).await;
    stop(first).await;
    stop(second).await;
    let mut ids: Vec<String> = records(&queue).await.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    assert_eq!(ids, ["reconcile:CAloop1", "reconcile:CAloop2"], "each once");
}

#[tokio::test]
async fn a_one_shot_reconcile_refuses_to_run_beside_a_reconciling_worker() {
    let queue = TestQueue::new(crate::backend::Backend::Amqp, types()).await;
    let polyai = FakePolyai::start().await;
    polyai.probe_answers(page(vec![], None));
    let env = queue.relay_env(&polyai.base_url, &[("RELAY_RECONCILE_EVERY", "100ms")]);
    let worker = RelayProcess::spawn(&["work"], &as_refs(&env)).await;
    // The worker has made a pass, so it holds the lock.
    wait_for_lists(&polyai, 1).await;
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("another reconciler is running"), "{stderr}");
    stop(worker).await;
}

#[tokio::test]
async fn a_list_page_too_large_to_read_is_asked_for_again_in_smaller_pages() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    let polyai = FakePolyai::start().await;
    // The list carries each call's turns: a page of long calls outgrows RELAY_API_MAX_RESPONSE.
    let long = |id: &str| {
        let mut call = call(id, hours(2), 3600, "live", false);
        call["turns"] = json!([{"user_input": "x".repeat(24 << 10), "user_input_datetime": call["started_at"]}]);
        call
    };
    polyai.script_list([
        page(vec![long("CAlong1"), long("CAlong2")], None),
        page(vec![long("CAlong1")], Some("page-2")),
        page(vec![long("CAlong2")], None),
    ]);
    let env = queue.relay_env(&polyai.base_url, &[("RELAY_API_MAX_RESPONSE", "32KiB")]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("reconciled 2,"), "{stdout}");
    let limits: Vec<String> = polyai
        .list_requests()
        .iter()
        .map(|r| r.query.split('&').find(|p| p.starts_with("limit=")).unwrap().into())
        .collect();
    assert_eq!(limits, ["limit=100", "limit=50", "limit=50"]);
}

#[tokio::test]
async fn a_list_that_moves_from_cursors_to_offsets_is_followed_by_offset_alone() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    let polyai = FakePolyai::start().await;
    polyai.script_list([
        page(vec![call("CAmix1", hours(2), 60, "live", false)], Some("cursor-2")),
        Reply::Json(
            json!({"conversations": [call("CAmix2", hours(2), 60, "live", false)], "cursor": null, "next_offset": 2}),
        ),
        page(vec![call("CAmix3", hours(2), 60, "live", false)], None),
    ]);
    let env = queue.relay_env(&polyai.base_url, &[]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("reconciled 3,"), "{stdout}");
    let third = &polyai.list_requests()[2].query;
    // The API takes a cursor over an offset sent beside it: the old cursor would repeat page 2.
    assert!(third.contains("offset=2") && !third.contains("cursor="), "{third}");
}

#[tokio::test]
async fn a_list_whose_cursors_go_round_in_a_circle_ends_instead_of_paging_for_ever() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    let polyai = FakePolyai::start().await;
    polyai.script_list([
        page(vec![call("CAround1", hours(2), 60, "live", false)], Some("cursor-b")),
        page(vec![call("CAround2", hours(2), 60, "live", false)], Some("cursor-c")),
    ]);
    // Every page after those names cursor-b again: c → b → c → b … without an end.
    polyai.probe_answers(page(vec![call("CAround3", hours(2), 60, "live", false)], Some("cursor-b")));
    let env = queue.relay_env(&polyai.base_url, &[]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("reconciled 3,"), "{stdout}");
    assert_eq!(polyai.list_requests().len(), 3);
    assert!(stderr.contains("named a cursor it had named before"), "{stderr}");
}

/// A webhook the worker's queue refused (a length limit: the broker nacks, the sender gets 503)
/// while the log kept its copy, and every retry refused too: PolyAI gives up. The log withdraws
/// each refused copy, so the call is not taken for known: it is left to PolyAI's retries for six
/// hours after the call ended and it was first refused, then reconciliation delivers it.
#[tokio::test]
async fn a_call_whose_every_webhook_the_broker_refused_is_reconciled_once_polyai_gave_up() {
    let app = spawn_app_with(Options { worker: false, ..Options::default() }).await;
    assert_eq!(app.post_signed(&completed("CAtaken")).await.status(), 204);
    let policy = Policy::set(&app.queue.broker().topology.enrich_queue, r#"{"max-length":0}"#).await;
    // The policy reaches the queue a moment after rabbitmqctl returns: posted until one is nacked.
    let nacks = r#"relay_publish_confirms_total{destination="events",result="nack"}"#;
    let tried = AtomicUsize::new(0);
    let refused = poll_until(Duration::from_secs(15), || async {
        let id = format!("CArefused{}", tried.fetch_add(1, Ordering::SeqCst));
        let status = app.post_signed(&completed(&id)).await.status().as_u16();
        match (status, app.metric(nacks).await) {
            (503, nacked) if nacked >= 1.0 => Ok(id),
            (status, _) => Err(format!("never nacked: {status}")),
        }
    })
    .await;
    // PolyAI's retry, refused as well.
    assert_eq!(app.post_signed(&completed(&refused)).await.status(), 503);
    app.wait_for_metric_at_least(r#"relay_publish_confirms_total{destination="withdrawn",result="ack"}"#, 2.0).await;
    drop(policy);

    // Refused minutes ago: PolyAI is still retrying, however long ago the call ended.
    let ended_long_ago = |id: &str| call(id, hours(7), 60, "live", false);
    let env = app.queue.relay_env(&app.polyai.base_url, &[]);
    app.polyai.script_list([page(vec![ended_long_ago("CAtaken"), ended_long_ago(&refused)], None)]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("reconciled 0, 1 already known"), "{stdout}");
    assert!(stdout.contains("1 refused and left to PolyAI's retries"), "{stdout}");

    // A call refused seven hours ago (its copy and withdrawal written then, as the relay writes
    // them) has been given up on: it is reconciled.
    let topology = &app.queue.broker().topology;
    let log = topology.conversations_log.clone().expect("the test topology has a log");
    let written = OffsetDateTime::now_utc().unix_timestamp() as u64 - 7 * 3600;
    let entry = |kind: &str| {
        BasicProperties::default().with_type(kind.into()).with_message_id("evt-gave-up".into()).with_timestamp(written)
    };
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let body = completed("CAgaveup");
    let options = BasicPublishOptions::default();
    let copy = entry("conversation.completed");
    let events = topology.events_exchange.as_str();
    channel
        .basic_publish(events.into(), "conversation.completed".into(), options, body.as_bytes(), copy)
        .await
        .unwrap()
        .await
        .unwrap();
    let withdrawal = entry(WITHDRAWN_TYPE);
    let withdrawal = channel.basic_publish("".into(), log.as_str().into(), options, body.as_bytes(), withdrawal);
    assert!(withdrawal.await.unwrap().await.unwrap().is_ack(), "the log took the withdrawal");
    connection.close(200, "done".into()).await.unwrap();
    app.polyai.script_list([page(vec![ended_long_ago("CAtaken"), ended_long_ago("CAgaveup")], None)]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("reconciled 1, 1 already known"), "{stdout}");
    assert!(stdout.contains("0 refused and left to PolyAI's retries"), "{stdout}");
    let line = stderr.lines().find(|line| line.contains("reconciled a finished call")).unwrap_or_default();
    assert!(line.contains("CAgaveup"), "{stderr}");
}

#[tokio::test]
async fn reconcile_needs_the_conversations_log() {
    let queue = TestQueue::new(crate::backend::Backend::Amqp, types()).await;
    let polyai = FakePolyai::start().await;
    let env = queue.relay_env(&polyai.base_url, &[("RELAY_CONVERSATIONS_LOG", "off")]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("RELAY_CONVERSATIONS_LOG is off"), "{stderr}");
    // The worker's loop too, at start-up rather than with a warning every round.
    let env = queue.relay_env(
        &polyai.base_url,
        &[("RELAY_CONVERSATIONS_LOG", "off"), ("RELAY_RECONCILE_EVERY", "15m"), ("RELAY_RECONCILE_WINDOW", "24h")],
    );
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["work"], &as_refs(&env)).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("RELAY_RECONCILE_EVERY needs RELAY_CONVERSATIONS_LOG, which is off"), "{stderr}");
    assert!(polyai.list_requests().is_empty());
}

/// One entry the relay cannot read made the whole page unreadable, on every pass: every call
/// listed after it left the window unseen. It is passed over; a state it cannot read counts as
/// in progress, looked at again on a later pass rather than taken as finished.
#[tokio::test]
async fn a_listed_conversation_that_cannot_be_read_is_passed_over_not_the_rest_of_the_list() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, types()).await;
    let polyai = FakePolyai::start().await;
    let mut unclear = call("CAunclear", hours(2), 60, "live", false);
    unclear["in_progress"] = Value::Null;
    polyai.script_list([
        page(vec![call("CAgood1", hours(2), 60, "live", false), json!({"id": null}), unclear], Some("page-2")),
        page(vec![json!({"no_id": true}), call("CAgood2", hours(3), 60, "live", false)], None),
    ]);
    let env = queue.relay_env(&polyai.base_url, &[]);
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["reconcile", "--since", "24h"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("reconciled 2, 0 already known, 1 in progress,"), "{stdout}");
    assert_eq!(polyai.list_requests().len(), 2, "the second page was read too");
    assert_eq!(stderr.matches("cannot be read; it is passed over").count(), 2, "{stderr}");
}
