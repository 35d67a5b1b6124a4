//! Backfill: every finished conversation of the window, once, across pages; resumable; patient
//! with 429s. Against the mock API (real cursors) and the scripted fake (offsets, faults).

use std::{collections::HashSet, time::Duration};

use polyai_relay::{
    backfill::{self, BackfillConfig, BackfillKey, Progress},
    config::{AmqpTarget, ApiSettings, EventTypes},
    polyai::{PolyaiClient, SettingNames},
    queue::{
        amqp::AmqpPublisher,
        embedded::{EmbeddedQueue, CONVERSATIONS_FILE},
        Publisher,
    },
    telemetry::Metrics,
};
use polyai_relay_devtools::mock_api::{MockApi, MockConfig};
use secrecy::SecretString;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{Backend, TempDir, TestQueue},
    fake_polyai::{conversation, FakePolyai, Reply, ACCOUNT, API_KEY, PROJECT},
    polyai_mock,
    process::run_to_exit_with_stdout,
};

const MINUTE: Duration = Duration::from_secs(60);
const HOURS_2: Duration = Duration::from_secs(2 * 3600);

fn client(base_url: &str) -> PolyaiClient {
    PolyaiClient::new(&ApiSettings::new(base_url.parse().unwrap(), SecretString::from(API_KEY), ACCOUNT, PROJECT))
        .unwrap()
}

fn config(dir: &TempDir, start: OffsetDateTime, end: OffsetDateTime, page_size: u32) -> BackfillConfig {
    BackfillConfig {
        key: BackfillKey {
            since: "test".into(),
            until: None,
            client_env: "live".into(),
            account_id: ACCOUNT.into(),
            project_id: PROJECT.into(),
        },
        start_time: start,
        end_time: end,
        page_size,
        dry_run: false,
        retry_base_delay: Duration::from_millis(10),
        checkpoint: dir.0.join("checkpoint.json"),
        keep_finished: false,
        setting_names: SettingNames::Variables,
    }
}

/// The last hour, `page_size` conversations a page.
fn last_hour(dir: &TempDir, page_size: u32) -> BackfillConfig {
    let now = OffsetDateTime::now_utc();
    config(dir, now - Duration::from_secs(3600), now, page_size)
}

/// The embedded queue in `dir`, which `records` reads.
fn queue(dir: &TempDir) -> EmbeddedQueue {
    EmbeddedQueue::open(&dir.0, 20).unwrap()
}

async fn run(
    settings: &BackfillConfig,
    base_url: &str,
    queue: &EmbeddedQueue,
) -> anyhow::Result<backfill::BackfillSummary> {
    backfill::run(settings, &client(base_url), Some(queue), &Progress::Lines, &CancellationToken::new()).await
}

fn records(dir: &TempDir) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.0.join(CONVERSATIONS_FILE)).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn page(ids: &[&str], cursor: Option<&str>) -> Reply {
    Reply::Json(json!({"conversations": ids.iter().map(|id| conversation(id)).collect::<Vec<_>>(), "cursor": cursor}))
}

#[tokio::test]
async fn every_finished_conversation_of_the_window_is_published_once_across_cursor_pages() {
    let (mock, _stop) = polyai_mock::mock().await;
    let end = OffsetDateTime::now_utc() + Duration::from_secs(60);
    let start = end - Duration::from_secs(12 * 3600);
    let expected: HashSet<String> = mock
        .conversations()
        .iter()
        .filter(|c| !c.in_progress && c.environment == "live" && c.started_at >= start && c.started_at < end)
        .map(|c| c.id.clone())
        .collect();
    assert!(expected.len() > 40, "enough for several pages: {}", expected.len());

    let dir = TempDir::new();
    let summary = run(&config(&dir, start, end, 20), &mock.base_url(), &queue(&dir)).await.unwrap();
    assert!(summary.pages >= 3, "{summary:?}");
    let records = records(&dir);
    let ids: Vec<String> = records.iter().map(|r| r["conversation"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), expected.len(), "each once");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), expected);
    let first = &records[0];
    assert_eq!(first["event_type"], "conversation.backfilled");
    assert_eq!(first["event_id"], format!("backfill:{}", ids[0]));
    assert_eq!(summary.published as usize, expected.len());
    assert!(!dir.0.join("checkpoint.json").exists(), "a finished run leaves no checkpoint");
}

#[tokio::test]
async fn offset_pages_are_followed_when_the_api_gives_no_cursor() {
    let fake = FakePolyai::start().await;
    let ids = ["CAo1", "CAo2", "CAo3"];
    fake.script_list([
        Reply::Json(
            json!({"conversations": [conversation(ids[0]), conversation(ids[1])], "cursor": null, "next_offset": 2}),
        ),
        Reply::Json(json!({"conversations": [conversation(ids[2])], "cursor": null})),
    ]);
    let dir = TempDir::new();
    run(&last_hour(&dir, 2), &fake.base_url, &queue(&dir)).await.unwrap();
    assert_eq!(records(&dir).len(), 3);
    let lists = fake.list_requests();
    assert!(lists[1].query.contains("offset=2"), "{:?}", lists[1].query);
}

#[tokio::test]
async fn an_empty_page_that_names_a_next_one_does_not_end_the_list() {
    let fake = FakePolyai::start().await;
    fake.script_list([page(&["CAe1"], Some("cursor-2")), page(&[], Some("cursor-3")), page(&["CAe2"], None)]);
    let dir = TempDir::new();
    run(&last_hour(&dir, 2), &fake.base_url, &queue(&dir)).await.unwrap();
    let ids: Vec<String> = records(&dir).iter().map(|r| r["conversation"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["CAe1", "CAe2"]);
    let lists = fake.list_requests();
    assert!(lists[2].query.contains("cursor=cursor-3"), "{:?}", lists[2].query);
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_from_its_checkpoint() {
    let fake = FakePolyai::start().await;
    fake.script_list([page(&["CAr1", "CAr2"], Some("cursor-2"))]);
    fake.script_list((0..5).map(|_| Reply::Status(503)));
    let dir = TempDir::new();
    let settings = last_hour(&dir, 2);
    let failed = run(&settings, &fake.base_url, &queue(&dir)).await;
    assert!(failed.unwrap_err().to_string().contains("503"));
    assert!(dir.0.join("checkpoint.json").exists());
    assert_eq!(records(&dir).len(), 2);

    fake.script_list([page(&["CAr3"], None)]);
    let summary = run(&settings, &fake.base_url, &queue(&dir)).await.unwrap();
    assert!(summary.resumed);
    let resumed_with = fake.list_requests().last().unwrap().query.clone();
    assert!(resumed_with.contains("cursor=cursor-2"), "{resumed_with}");
    let ids: Vec<_> = records(&dir).iter().map(|r| r["conversation"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["CAr1", "CAr2", "CAr3"]);
    assert!(!dir.0.join("checkpoint.json").exists());
}

/// A list request's value of `name`, if it sent one.
fn param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// A time as list requests send it: RFC 3339 in whole seconds.
fn time_text(time: OffsetDateTime) -> String {
    time.replace_nanosecond(0).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[tokio::test]
async fn an_interrupted_backfill_run_again_later_finishes_its_window_then_lists_what_the_window_gained() {
    let fake = FakePolyai::start().await;
    fake.script_list([page(&["CAl1", "CAl2"], Some("cursor-2"))]);
    fake.script_list((0..5).map(|_| Reply::Status(503)));
    let dir = TempDir::new();
    let first = last_hour(&dir, 2);
    assert!(run(&first, &fake.base_url, &queue(&dir)).await.is_err());

    // Two hours on, the same arguments (`--since 1h`, say) ask for a later hour.
    let later = config(&dir, first.start_time + HOURS_2, first.end_time + HOURS_2, 2);
    fake.script_list([page(&["CAl3"], None), page(&["CAl4"], None)]);
    let summary = run(&later, &fake.base_url, &queue(&dir)).await.unwrap();

    let lists = fake.list_requests();
    let (resumed, beyond) = (&lists[lists.len() - 2].query, &lists[lists.len() - 1].query);
    assert_eq!(param(resumed, "cursor").as_deref(), Some("cursor-2"), "the cursor, with its own window's query");
    assert_eq!(param(resumed, "start_time"), Some(time_text(first.start_time)), "{resumed}");
    assert_eq!(param(resumed, "end_time"), Some(time_text(first.end_time)), "{resumed}");
    assert_eq!(param(beyond, "cursor"), None, "{beyond}");
    assert_eq!(param(beyond, "start_time"), Some(time_text(later.start_time)), "{beyond}");
    assert_eq!(param(beyond, "end_time"), Some(time_text(later.end_time)), "{beyond}");
    let ids: Vec<_> = records(&dir).iter().map(|r| r["conversation"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["CAl1", "CAl2", "CAl3", "CAl4"]);
    assert!(summary.resumed && !summary.finished_earlier, "{summary:?}");
    assert_eq!(summary.earlier.map(|w| (w.start, w.end)), Some((first.start_time, first.end_time)));
    assert_eq!(summary.then.map(|w| (w.start, w.end)), Some((later.start_time, later.end_time)));
    assert!(!dir.0.join("checkpoint.json").exists());
}

#[tokio::test]
async fn a_backfill_run_again_soon_after_lists_only_the_moments_since_its_window_ended() {
    let fake = FakePolyai::start().await;
    fake.script_list([page(&["CAs1"], Some("cursor-2"))]);
    fake.script_list((0..5).map(|_| Reply::Status(503)));
    let dir = TempDir::new();
    let first = last_hour(&dir, 1);
    assert!(run(&first, &fake.base_url, &queue(&dir)).await.is_err());

    let later = config(&dir, first.start_time + MINUTE, first.end_time + MINUTE, 1);
    fake.script_list([page(&["CAs2"], None), page(&[], None)]);
    let summary = run(&later, &fake.base_url, &queue(&dir)).await.unwrap();
    let beyond = fake.list_requests().last().unwrap().query.clone();
    let beyond = beyond.as_str();
    assert_eq!(param(beyond, "start_time"), Some(time_text(first.end_time)), "from where the saved window ended");
    assert_eq!(param(beyond, "end_time"), Some(time_text(later.end_time)), "{beyond}");
    assert_eq!(summary.then.map(|w| (w.start, w.end)), Some((first.end_time, later.end_time)));
    assert_eq!(records(&dir).len(), 2);
}

#[tokio::test]
async fn an_interruption_past_the_earlier_window_resumes_there_and_not_from_the_earlier_window() {
    let fake = FakePolyai::start().await;
    fake.script_list([page(&["CAi1"], Some("cursor-2"))]);
    fake.script_list((0..5).map(|_| Reply::Status(503)));
    let dir = TempDir::new();
    let first = last_hour(&dir, 1);
    assert!(run(&first, &fake.base_url, &queue(&dir)).await.is_err());

    let later = config(&dir, first.start_time + HOURS_2, first.end_time + HOURS_2, 1);
    fake.script_list([page(&["CAi2"], None), page(&["CAi3"], Some("cursor-b"))]);
    fake.script_list((0..5).map(|_| Reply::Status(503)));
    assert!(run(&later, &fake.base_url, &queue(&dir)).await.is_err());

    fake.script_list([page(&["CAi4"], None)]);
    let summary = run(&later, &fake.base_url, &queue(&dir)).await.unwrap();
    let resumed = fake.list_requests().last().unwrap().query.clone();
    assert_eq!(param(&resumed, "cursor").as_deref(), Some("cursor-b"), "{resumed}");
    assert_eq!(param(&resumed, "start_time"), Some(time_text(later.start_time)), "{resumed}");
    assert_eq!(summary.earlier.map(|w| (w.start, w.end)), Some((later.start_time, later.end_time)));
    assert_eq!(summary.then, None, "nothing past it");
    let ids: Vec<_> = records(&dir).iter().map(|r| r["conversation"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["CAi1", "CAi2", "CAi3", "CAi4"]);
}

#[tokio::test]
async fn an_unfinished_checkpoint_of_other_arguments_stops_the_run() {
    let fake = FakePolyai::start().await;
    fake.script_list([page(&["CAx1"], Some("cursor-2"))]);
    fake.script_list((0..5).map(|_| Reply::Status(503)));
    let dir = TempDir::new();
    let first = last_hour(&dir, 1);
    assert!(run(&first, &fake.base_url, &queue(&dir)).await.is_err());

    let mut other = last_hour(&dir, 1);
    other.key.since = "2h".into();
    let error = run(&other, &fake.base_url, &queue(&dir)).await.unwrap_err().to_string();
    assert!(error.contains("belongs to a backfill with other arguments"), "{error}");
}

#[tokio::test]
async fn a_429_mid_backfill_is_waited_out() {
    let fake = FakePolyai::start().await;
    fake.script_list([page(&["CAw1"], Some("c2")), Reply::RateLimited("1"), page(&["CAw2"], None)]);
    let dir = TempDir::new();
    run(&last_hour(&dir, 1), &fake.base_url, &queue(&dir)).await.unwrap();
    assert_eq!(records(&dir).len(), 2);
    let lists = fake.list_requests();
    assert_eq!(lists.len(), 3);
    assert!(lists[2].at - lists[1].at >= Duration::from_secs(1), "waited for Retry-After");
}

#[tokio::test]
async fn rate_limits_in_a_row_asking_for_no_wait_are_waited_longer_each_time() {
    let fake = FakePolyai::start().await;
    let limited = [Reply::RateLimited("0"), Reply::RateLimited("0")];
    fake.script_list([page(&["CAz1"], Some("c2"))].into_iter().chain(limited).chain([page(&["CAz2"], None)]));
    let dir = TempDir::new();
    run(&last_hour(&dir, 1), &fake.base_url, &queue(&dir)).await.unwrap();
    assert_eq!(records(&dir).len(), 2);
    let lists = fake.list_requests();
    assert_eq!(lists.len(), 4);
    // A second after the first, two after the second: not the same page asked for at once.
    assert!(lists[2].at - lists[1].at >= Duration::from_secs(1), "{:?}", lists[2].at - lists[1].at);
    assert!(lists[3].at - lists[2].at >= Duration::from_secs(2), "{:?}", lists[3].at - lists[2].at);
}

#[tokio::test]
async fn a_conversation_whose_record_is_over_the_broker_limit_is_named_and_left_out_and_the_rest_published() {
    let fake = FakePolyai::start().await;
    let mut big = conversation("CAbig");
    big["padding"] = json!("x".repeat(256 << 10));
    let listed = vec![conversation("CAb1"), big, conversation("CAb2")];
    fake.script_list([Reply::Json(json!({"conversations": listed, "cursor": null}))]);
    let broker = TestQueue::new(Backend::Amqp, EventTypes::All).await;
    let settings = broker.settings(EventTypes::All, None);
    let target = AmqpTarget { max_message: 64 << 10, ..settings.amqp_url.expect("RabbitMQ") };
    let stop = CancellationToken::new();
    let publisher = AmqpPublisher::start(target, settings.topology.clone(), Metrics::isolated(), stop.clone());
    publisher.wait_connected().await;

    let dir = TempDir::new();
    let config = last_hour(&dir, 10);
    let summary = backfill::run(&config, &client(&fake.base_url), Some(&publisher), &Progress::Lines, &stop).await;
    let summary = summary.expect("the run goes on past it");
    assert_eq!((summary.published, summary.too_large), (2, vec!["CAbig".to_owned()]));
    let broker = broker.broker();
    let ids = broker.drain_ids(broker.conversations_queue()).await;
    assert_eq!(ids, HashSet::from(["backfill:CAb1".to_owned(), "backfill:CAb2".to_owned()]));
    assert!(publisher.is_ready());
    stop.cancel();
}

#[tokio::test]
async fn the_command_runs_a_dry_run_against_the_mock_without_publishing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = MockApi::start(MockConfig::default(), listener, CancellationToken::new()).await.unwrap();
    let dir = TempDir::new();
    let data_dir = dir.0.display().to_string();
    let base_url = mock.base_url();
    let env = [
        ("POLYAI_API_KEY", "mock-api-key"),
        ("POLYAI_BASE_URL", base_url.as_str()),
        ("POLYAI_ACCOUNT_ID", "ws-mock"),
        ("POLYAI_PROJECT_ID", "PROJECT-MOCK"),
        ("RELAY_DATA_DIR", &data_dir),
    ];
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["backfill", "--since", "24h", "--dry-run"], &env).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("would publish"), "{stdout}");
    assert!(!dir.0.join(CONVERSATIONS_FILE).exists(), "a dry run publishes nothing");
}
