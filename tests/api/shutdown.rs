//! A shutdown with requests and enrichments in flight loses nothing that was answered 204.

use std::{collections::HashSet, time::Duration};

use futures_util::future::join_all;
use polyai_relay::config::EventTypes;
use tokio::sync::Notify;

use crate::{
    backend::{both_backends, TestQueue},
    fake_polyai::{FakePolyai, Reply},
    helpers::{http, post_event, spawn_app_with, Options},
    process::{as_refs, RelayProcess},
};

fn accepted(results: Vec<(String, Option<u16>)>) -> HashSet<String> {
    results.into_iter().filter(|(_, status)| *status == Some(204)).map(|(id, _)| id).collect()
}

both_backends! {
    async fn a_shutdown_mid_stream_keeps_every_event_answered_204(backend: Backend) {
        let mut app = spawn_app_with(Options { backend, worker: false, ..Options::default() }).await;
        let http = http();
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

        let accepted = accepted(results);
        assert!(!accepted.is_empty(), "some requests were answered before the shutdown");
        let enqueued = app.queue.pending_ids().await;
        for id in &accepted {
            assert!(enqueued.contains(id), "{id} was answered 204 but is not in the queue");
        }
    }

    async fn sigterm_with_work_in_flight_exits_0_within_10s_and_loses_nothing(backend: Backend) {
        let queue = TestQueue::new(backend, EventTypes::All).await;
        let polyai = FakePolyai::start().await;
        // Slow API answers keep enrichments in flight when the signal arrives.
        polyai.always(Reply::Slow(Duration::from_millis(300)));
        let env = queue.relay_env(&polyai.base_url, &[("RELAY_EVENTS", "*"), ("RELAY_API_CONCURRENCY", "4")]);
        let env = as_refs(&env);
        let mut relay = RelayProcess::spawn(&["run"], &env).await;
        let http = http();
        let url = relay.url("/polyai-events");
        relay.wait_ready().await;
        // A first batch puts enrichments under way; a second one races the signal.
        let first = join_all((0..20).map(|i| post_event(&http, &url, format!("evt-a{i}")))).await;
        let mut accepted = accepted(first);
        assert_eq!(accepted.len(), 20);
        polyai.wait_for_requests(1).await;
        let burst = join_all((0..20).map(|i| post_event(&http, &url, format!("evt-b{i}"))));
        let signal = async { relay.terminate() };
        let (results, ()) = tokio::join!(burst, signal);
        accepted.extend(self::accepted(results));
        assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());

        // What the relay handed back is in the queue once the broker has dropped its consumers.
        queue.wait_until_unconsumed().await;
        let enriched = queue.enriched_ids().await;
        let waiting = queue.pending_ids().await;
        for id in &accepted {
            assert!(enriched.contains(id) || waiting.contains(id), "{id} was answered 204 and then lost");
        }
    }
}

/// `polyai-relay serve 2>&1 | head -1`: stderr is a closed pipe by the time the signal comes.
#[tokio::test]
async fn sigterm_stops_the_relay_even_when_its_stderr_is_a_closed_pipe() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let data_dir = std::env::temp_dir().join(format!("relay-closed-stderr-{}", uuid::Uuid::new_v4()));
    let mut command = crate::process::relay_command(&["serve"]);
    command
        .env("POLYAI_WEBHOOK_SECRET", crate::helpers::SECRET)
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .env("RELAY_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RELAY_DATA_DIR", &data_dir)
        .env("RELAY_LOG_FORMAT", "json");
    let mut child = command.spawn().expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    while let Some(line) = lines.next_line().await.expect("stderr readable") {
        if line.contains(r#""message":"listening""#) {
            break;
        }
    }
    // The reader goes away, as `head -1` does: every later write to stderr fails.
    drop(lines);

    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the relay stops on SIGTERM with its stderr closed")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(data_dir);
}
