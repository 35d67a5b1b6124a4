//! The real binary stopped (SIGKILL or SIGTERM) with events in its spool while RabbitMQ is cut
//! off: the spool is on disk, and the next start forwards every event in it.

use std::{collections::HashSet, time::Duration};

use polyai_relay::{config::EventTypes, queue::embedded::EmbeddedQueue};
use polyai_relay_devtools::sender::{signed_post, SendScheme};
use secrecy::SecretString;

use crate::{
    backend::{Backend, TempDir, TestQueue},
    broker::{amqp_url, MESSAGE_WAIT},
    crash::wait_until_enriched,
    fake_polyai::FakePolyai,
    helpers::{completed, http, SECRET},
    poll::poll_until,
    process::{as_refs, RelayProcess},
    proxy::Proxy,
};

enum Stop {
    Kill,
    Terminate,
}

/// Posts an event about `CA{id}` with event id `id`; its status and `X-Relay-Outcome`.
async fn post(relay: &RelayProcess, id: &str) -> (u16, Option<String>) {
    let http = http();
    let secret = SecretString::from(SECRET);
    let request = signed_post(
        &http,
        relay.url("/polyai-events"),
        &secret,
        SendScheme::Timestamped,
        id,
        completed(&format!("CA{id}")),
    );
    let response = request.send().await.expect("the relay answers");
    let outcome = response.headers().get("x-relay-outcome").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), outcome)
}

/// Posts until an event is answered with `outcome`; every answer must be a 204. Each post waits
/// for the relay's answer: one goes out as soon as the last is answered.
async fn post_until(relay: &RelayProcess, prefix: &str, outcome: Option<&str>, accepted: &mut HashSet<String>) {
    let answered = async {
        for i in 0.. {
            let id = format!("{prefix}{i}");
            let (status, answered) = post(relay, &id).await;
            assert_eq!(status, 204, "{id}");
            accepted.insert(id);
            if answered.as_deref() == outcome {
                return;
            }
        }
    };
    tokio::time::timeout(MESSAGE_WAIT, answered).await.unwrap_or_else(|_| panic!("never answered {outcome:?}"));
}

async fn stopped_with_a_non_empty_spool_then_restarted_loses_nothing(stop: Stop) {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::Only(vec!["conversation.completed".into()])).await;
    let polyai = FakePolyai::start().await;
    let url = url::Url::parse(&amqp_url()).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672));
    let proxy = Proxy::start(tokio::net::lookup_host(target).await.unwrap().next().unwrap()).await;
    let spool = TempDir::new();
    let spool_dir = spool.0.join("spool").display().to_string();
    let proxy_url = proxy.amqp_url();
    let extra =
        [("AMQP_URL", proxy_url.as_str()), ("RELAY_SPOOL_DIR", spool_dir.as_str()), ("RELAY_ACK_DEADLINE", "600ms")];
    let env = queue.relay_env(&polyai.base_url, &extra);
    let env = as_refs(&env);

    let mut relay = RelayProcess::spawn(&["run"], &env).await;
    // Until it has reached the broker, the relay spools every webhook: posts start once it says so.
    relay.wait_for_log("broker connected", MESSAGE_WAIT).await;
    let mut accepted = HashSet::new();
    post_until(&relay, "evt-before-", None, &mut accepted).await;
    // What was spooled before the broker connected is forwarded first.
    wait_for_empty_spool(&spool.0.join("spool")).await;
    proxy.cut();
    post_until(&relay, "evt-cut-", Some("spooled"), &mut accepted).await;
    for i in 0..20 {
        let id = format!("evt-spooled-{i}");
        assert_eq!(post(&relay, &id).await, (204, Some("spooled".to_owned())));
        accepted.insert(id);
    }
    let spooled = EmbeddedQueue::count_in(&spool.0.join("spool")).unwrap();
    assert!(spooled >= 20, "{spooled}");

    match stop {
        Stop::Kill => {
            relay.child.start_kill().expect("SIGKILL");
            relay.child.wait().await.expect("reaped");
        }
        Stop::Terminate => {
            relay.terminate();
            assert_eq!(relay.wait_for_exit(Duration::from_secs(15)).await, Some(0), "{}", relay.logs());
        }
    }
    assert_eq!(EmbeddedQueue::count_in(&spool.0.join("spool")).unwrap(), spooled, "the spool outlives the process");

    proxy.restore();
    let _restarted = RelayProcess::spawn(&["run"], &env).await;
    wait_until_enriched(&queue, &accepted).await;
    wait_for_empty_spool(&spool.0.join("spool")).await;
}

/// Waits until the spool in `dir` is empty. Its drainer runs in the relay binary, which says
/// nothing to the test: the spool is counted until then.
async fn wait_for_empty_spool(dir: &std::path::Path) {
    poll_until(MESSAGE_WAIT, || async {
        match EmbeddedQueue::count_in(dir).unwrap() {
            0 => Ok(()),
            left => Err(format!("the spool never emptied: {left} left")),
        }
    })
    .await
}

#[tokio::test]
async fn a_relay_killed_with_events_in_its_spool_forwards_them_all_after_a_restart() {
    stopped_with_a_non_empty_spool_then_restarted_loses_nothing(Stop::Kill).await;
}

#[tokio::test]
async fn a_relay_terminated_with_events_in_its_spool_exits_cleanly_and_forwards_them_after_a_restart() {
    stopped_with_a_non_empty_spool_then_restarted_loses_nothing(Stop::Terminate).await;
}
