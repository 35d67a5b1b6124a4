//! Reconciliation with `RELAY_PROJECTS_FILE` (design §12): every project's calls are listed with
//! its own key, and each event it makes names its project, so the worker fetches it with that
//! project's key. One project's refused key holds back only that project's reconciliation, in
//! the one-shot command and in the worker's loop.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use polyai_relay::{
    config::{AmqpTarget, ApiSettings, EventTypes, ProjectName, ReconcileSettings},
    polyai::PolyaiClient,
    queue::{embedded::EmbeddedQueue, Backend as QueueBackend, Delivery, Message, Source},
    reconcile::{run_continuously, LedgerSource},
    telemetry::Metrics,
};
use polyai_relay_devtools::mock_api::Faults;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{both_backends, TempDir, TestQueue},
    poll::poll_until,
    process::{as_refs, run_to_exit_with_stdout, RelayProcess},
    two_projects::{TwoProjects, KEY_UK, KEY_US, UK, US},
};

async fn reconcile(queue: &TestQueue, projects: &TwoProjects, args: &[&str]) -> (Option<i32>, String, String) {
    let mut env = queue.env();
    env.push(("RELAY_PROJECTS_FILE".into(), projects.file.clone()));
    let env = as_refs(&env);
    let mut all = vec!["reconcile", "--since", "24h"];
    all.extend_from_slice(args);
    run_to_exit_with_stdout(&all, &env).await
}

/// Takes every event waiting for the worker: event id → its `x-relay-project`.
async fn take_events(queue: &TestQueue) -> HashMap<String, Option<String>> {
    let stop = CancellationToken::new();
    let backend =
        QueueBackend::open(&queue.settings(EventTypes::All, None), Metrics::isolated(), stop.clone()).unwrap();
    backend.first_connection(Duration::from_secs(10)).await.unwrap();
    let events = drain(backend.source.as_ref()).await;
    stop.cancel();
    events
}

async fn drain(source: &dyn Source) -> HashMap<String, Option<String>> {
    let mut events = HashMap::new();
    while let Some(delivery) = crate::helpers::get_retrying(source).await {
        let (id, project) = take(delivery).await;
        events.insert(id, project);
    }
    events
}

/// Acks an event: its id and its `x-relay-project`.
async fn take(delivery: Delivery) -> (String, Option<String>) {
    delivery.acker.ack().await.unwrap();
    let Message { message_id, headers, .. } = delivery.message;
    (message_id, headers.get("x-relay-project").cloned())
}

/// What a pass over every project should have put into the queue: each project's finished
/// calls, named by their project.
fn expected(projects: &TwoProjects, names: &[&str]) -> HashMap<String, Option<String>> {
    names
        .iter()
        .flat_map(|name| {
            projects.finished_calls(name).into_iter().map(|id| (format!("reconcile:{id}"), Some(name.to_string())))
        })
        .collect()
}

both_backends! {
    async fn reconcile_finds_each_projects_missing_calls_with_its_own_key(backend: Backend) {
        let queue = TestQueue::new(backend, EventTypes::All).await;
        let projects = TwoProjects::start().await;
        let (code, stdout, stderr) = reconcile(&queue, &projects, &[]).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        for name in [UK, US] {
            let line = format!("project `{name}`: ");
            let count = format!("reconciled {},", projects.finished_calls(name).len());
            assert!(stdout.lines().any(|l| l.starts_with(&line) && l.contains(&count)), "{name} {count}: {stdout}");
        }
        assert_eq!(take_events(&queue).await, expected(&projects, &[UK, US]));
    }

    async fn a_refused_key_holds_back_only_its_projects_reconciliation(backend: Backend) {
        let queue = TestQueue::new(backend, EventTypes::All).await;
        let projects = TwoProjects::start().await;
        // The first project of the file fails; the second is reconciled all the same.
        projects.control().revoke(TwoProjects::tenant(UK)).unwrap();
        let (code, stdout, stderr) = reconcile(&queue, &projects, &[]).await;
        assert_eq!(code, Some(1), "{stdout}{stderr}");
        assert!(stderr.contains("project `acme-uk`: listing conversations failed: 401"), "{stderr}");
        assert!(stderr.contains("reconciling project(s) acme-uk failed"), "{stderr}");
        let us = format!("reconciled {},", projects.finished_calls(US).len());
        assert!(stdout.lines().any(|l| l.starts_with("project `acme-us`: ") && l.contains(&us)), "{stdout}");
        assert!(!stdout.contains("project `acme-uk`"), "{stdout}");
        assert_eq!(take_events(&queue).await, expected(&projects, &[US]));

        // Once the key works again, --project reconciles that project alone.
        projects.control().restore(TwoProjects::tenant(UK)).unwrap();
        let (code, stdout, stderr) = reconcile(&queue, &projects, &["--project", UK, "--dry-run"]).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("project `acme-uk`: would reconcile CA") && !stdout.contains("acme-us"), "{stdout}");
        let (code, stdout, stderr) = reconcile(&queue, &projects, &["--project", UK]).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert_eq!(take_events(&queue).await, expected(&projects, &[UK]));
    }
}

/// `project`'s entry in the projects file `text` forwards handoffs alone.
fn handoffs_only(text: String, project: &str) -> String {
    TwoProjects::with_line(text, project, r#"events = ["handoff.created"]"#)
}

/// The two projects on the embedded queue, `acme-uk` forwarding only `handoff.created`, with the
/// variables of a worker reconciling every hour.
async fn uk_forwarding_handoffs_only_reconciled_hourly() -> (TestQueue, TwoProjects, Vec<(String, String)>) {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, EventTypes::All).await;
    let projects = TwoProjects::start().await;
    projects.write(|text| handoffs_only(text, UK));
    let mut env = queue.env();
    env.push(("RELAY_PROJECTS_FILE".into(), projects.file.clone()));
    env.push(("RELAY_RECONCILE_EVERY".into(), "1h".into()));
    (queue, projects, env)
}

/// A project that forwards no `conversation.completed` would get a record of every call from
/// reconciliation: the one-shot run leaves it out and says why, and reconciles the other.
#[tokio::test]
async fn reconcile_leaves_out_a_project_that_forwards_no_calls_end() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, EventTypes::All).await;
    let projects = TwoProjects::start().await;
    projects.write(|text| handoffs_only(text, UK));
    let (code, stdout, stderr) = reconcile(&queue, &projects, &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("project `acme-uk`: left out: it forwards no conversation.completed"), "{stdout}");
    let us = format!("reconciled {},", projects.finished_calls(US).len());
    assert!(stdout.lines().any(|l| l.starts_with("project `acme-us`: ") && l.contains(&us)), "{stdout}");
    assert_eq!(take_events(&queue).await, expected(&projects, &[US]));

    // Asked for that project alone, the run has nothing to do, and fails saying so.
    let (code, stdout, stderr) = reconcile(&queue, &projects, &["--project", UK]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let why = "no project forwards conversation.completed of `live` calls (--client-env), so none would take their records (project `acme-uk`: it forwards no conversation.completed";
    assert!(stderr.contains(why), "{stderr}");
    assert!(take_events(&queue).await.is_empty());
}

/// The same in the worker's loop: `run` with the projects file reconciles only the project that
/// forwards the calls' ends, and warns at start-up of the one it leaves out.
#[tokio::test]
async fn the_reconcile_loop_leaves_out_a_project_that_forwards_no_calls_end() {
    let (queue, projects, env) = uk_forwarding_handoffs_only_reconciled_hourly().await;
    let mut relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
    let logs = relay.wait_for_log("reconciliation leaves this project's calls alone", Duration::from_secs(20)).await;
    let line = logs.lines().find(|l| l.contains("leaves this project's calls alone")).unwrap();
    assert!(line.contains("acme-uk") && line.contains("it forwards no conversation.completed"), "{line}");

    // The round lists the file's projects in order: once the second's calls are all records,
    // anything of the first's would have been queued before them.
    let wanted: HashSet<String> = expected(&projects, &[US]).into_keys().collect();
    poll_until(Duration::from_secs(60), || async {
        let records = queue.enriched_ids().await;
        if wanted.is_subset(&records) {
            Ok(())
        } else {
            Err(format!("{} of {} records", records.len(), wanted.len()))
        }
    })
    .await;
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(15)).await, Some(0), "{}", relay.logs());
    let mut everything = queue.enriched_ids().await;
    everything.extend(queue.pending_ids().await);
    assert_eq!(everything, wanted);
}

/// `check` warns of what the worker would leave out, in the worker's words, and passes: the
/// worker starts all the same.
#[tokio::test]
async fn check_warns_of_each_project_reconciliation_leaves_out() {
    let (_queue, projects, env) = uk_forwarding_handoffs_only_reconciled_hourly().await;
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["check"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let warned: Vec<&str> = stdout.lines().filter(|l| l.contains("reconciliation leaves")).collect();
    assert_eq!(warned.len(), 1, "{stdout}");
    assert!(warned[0].contains("acme-uk") && warned[0].contains("it forwards no conversation.completed"), "{stdout}");
    assert!(!stdout.contains("reconciliation is off"), "the other project is reconciled:\n{stdout}");

    // With both left out, it says reconciliation is off.
    projects.write(|text| handoffs_only(handoffs_only(text, UK), US));
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["check"], &as_refs(&env)).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("reconciliation is off: no project forwards conversation.completed"), "{stdout}");
}

#[tokio::test]
async fn an_unknown_project_is_refused_before_anything_is_listed() {
    let queue = TestQueue::new(crate::backend::Backend::Embedded, EventTypes::All).await;
    let projects = TwoProjects::start().await;
    let (code, _, stderr) = reconcile(&queue, &projects, &["--project", "acme-fr"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--project `acme-fr` is not in RELAY_PROJECTS_FILE (acme-uk, acme-us)"), "{stderr}");
}

/// The client of relay project `name`, with its key and ids.
fn client(projects: &TwoProjects, name: &str, key: &str, account: &str, project: &str) -> PolyaiClient {
    let settings = ApiSettings {
        project: ProjectName::parse("test", name).unwrap(),
        ..ApiSettings::new(projects.mock.base_url().parse().unwrap(), SecretString::from(key), account, project)
    };
    PolyaiClient::new(&settings).unwrap()
}

/// The worker's loop, in process on the embedded queue: a round lists every project with its own
/// key; the first project's refused key is logged and counted, and the second is reconciled.
#[tokio::test]
async fn the_reconcile_loop_goes_on_past_a_project_whose_key_is_refused() {
    let projects = TwoProjects::start().await;
    projects.control().revoke(TwoProjects::tenant(UK)).unwrap();
    the_loop_goes_on_past_the_first_project(projects).await;
}

/// The same with the first project's lists rate-limited for good: its pass gives up after a few
/// 429s, as after other passing failures, rather than hold the round, and the other's calls.
#[tokio::test]
async fn the_reconcile_loop_goes_on_past_a_project_rate_limited_for_good() {
    let projects = TwoProjects::start().await;
    let faults = Faults { rate_429: 1.0, retry_after: Duration::ZERO, ..Faults::default() };
    projects.control().set_faults(TwoProjects::tenant(UK), faults).unwrap();
    the_loop_goes_on_past_the_first_project(projects).await;
}

/// The loop's settings for one round: the test ends it.
fn one_round() -> ReconcileSettings {
    ReconcileSettings {
        every: Duration::from_secs(3600),
        window: Duration::from_secs(24 * 3600),
        settle: Duration::from_secs(600),
        client_env: "live".into(),
        left_out: Vec::new(),
    }
}

/// The clients of both projects, the first project of the file first.
fn clients(projects: &TwoProjects) -> Vec<PolyaiClient> {
    vec![
        client(
            projects,
            UK,
            KEY_UK,
            polyai_relay_devtools::mock_api::DEFAULT_ACCOUNT_ID,
            polyai_relay_devtools::mock_api::DEFAULT_PROJECT_ID,
        ),
        client(projects, US, KEY_US, "ws-us", "PROJECT-US"),
    ]
}

async fn the_loop_goes_on_past_the_first_project(projects: TwoProjects) {
    let dir = TempDir::new();
    let queue = EmbeddedQueue::open(&dir.0, 20).unwrap();
    let (settings, clients) = (one_round(), clients(&projects));
    let topology = crate::broker::TestBroker::topology_for("embedded", EventTypes::All);
    let metrics = Metrics::isolated();
    let stop = CancellationToken::new();
    let source = LedgerSource::embedded(queue.clone(), &topology);
    let running = tokio::spawn(run_continuously(settings, clients, source, metrics.clone(), stop.clone()));

    // The round's events, taken as the queue hands them to a consumer, then whatever else it holds.
    let wanted = projects.finished_calls(US).len();
    let mut consumer = Source::open(&queue, 1).await.unwrap();
    let mut events = HashMap::new();
    for _ in 0..wanted {
        let next = tokio::time::timeout(crate::broker::MESSAGE_WAIT, consumer.next()).await;
        let delivery = next.unwrap_or_else(|_| panic!("{} of {wanted} reconciled", events.len())).unwrap();
        let (id, project) = take(delivery).await;
        events.insert(id, project);
    }
    drop(consumer);
    stop.cancel();
    running.await.unwrap();

    events.extend(drain(&queue).await);
    assert_eq!(events, expected(&projects, &[US]));
    let text = metrics.render();
    assert!(text.contains("relay_reconcile_failures_total{project=\"acme-uk\"} 1"), "{text}");
    assert!(text.contains(&format!("relay_reconciled_total{{project=\"acme-us\"}} {wanted}")), "{text}");
    assert!(text.contains("relay_reconcile_failures_total{project=\"acme-us\"} 0"), "{text}");
}

/// A ledger out of reach fails every project's pass: each is counted, so that the alert fires,
/// rather than a warning alone.
#[tokio::test]
async fn a_ledger_out_of_reach_is_counted_as_a_failure_of_every_project() {
    let projects = TwoProjects::start().await;
    let nowhere = AmqpTarget::single(SecretString::from("amqp://guest:guest@127.0.0.1:1/%2f"));
    let topology = crate::broker::TestBroker::topology_for("nowhere", EventTypes::All);
    let source = LedgerSource::Amqp { target: Box::new(nowhere), topology: Box::new(topology) };
    let (metrics, stop) = (Metrics::isolated(), CancellationToken::new());
    let running =
        tokio::spawn(run_continuously(one_round(), clients(&projects), source, metrics.clone(), stop.clone()));
    let counted = |name: &str| format!("relay_reconcile_failures_total{{project=\"{name}\"}} 1");
    poll_until(Duration::from_secs(30), || async {
        let text = metrics.render();
        if text.contains(&counted(UK)) && text.contains(&counted(US)) {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    stop.cancel();
    running.await.unwrap();
}
