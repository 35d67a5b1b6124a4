//! The line each webhook leaves in the JSON log, as operators search it: one line per request,
//! its outcome and the event it carried in the `webhook` span's fields.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use polyai_relay::config::EventTypes;
use polyai_relay_devtools::sender::{signed_post, SendScheme};
use secrecy::SecretString;

use crate::{
    broker::TestBroker,
    helpers::{completed, http},
    process::RelayProcess,
    two_projects::{TwoProjects, UK, US},
};

const SECRET: &str = "whsec_logged";

/// `serve` on a vhost of its own with `SECRET`, `extra` in its environment, ready.
async fn serve(broker: &TestBroker, extra: &[(&str, &str)]) -> RelayProcess {
    let mut env = broker.topology_env();
    env.extend([("AMQP_URL", broker.url.clone()), ("POLYAI_WEBHOOK_SECRET", SECRET.into())]);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    env.extend_from_slice(extra);
    let relay = RelayProcess::spawn(&["serve"], &env).await;
    relay.wait_ready().await;
    relay
}

/// Posts a webhook about `conversation` with event id `id`, signed with `secret`; its status.
async fn post(relay: &RelayProcess, secret: &str, conversation: &str, id: &str) -> u16 {
    post_to(relay, "/polyai-events", secret, conversation, id).await
}

/// [`post`] to the webhook path `path`.
async fn post_to(relay: &RelayProcess, path: &str, secret: &str, conversation: &str, id: &str) -> u16 {
    let secret = SecretString::from(secret);
    let request = signed_post(&http(), relay.url(path), &secret, SendScheme::Timestamped, id, completed(conversation));
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn an_enqueued_webhook_is_logged_once_with_its_project_event_and_outcome() {
    let broker = TestBroker::new(EventTypes::All).await;
    let mut relay = serve(&broker, &[]).await;
    assert_eq!(post(&relay, SECRET, "CA-logged", "evt-logged-1").await, 204);

    let logs = relay.wait_for_log("webhook enqueued", Duration::from_secs(10)).await;
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|line| line.contains("webhook enqueued"))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    let line = &lines[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["elapsed_ms"].is_number(), "{line}");
    let span = &line["span"];
    assert_eq!(span["name"], "webhook", "{line}");
    assert_eq!(span["project"], "default", "{line}");
    assert_eq!(span["event_id"], "evt-logged-1", "{line}");
    assert_eq!(span["event_type"], "conversation.completed", "{line}");
    assert_eq!(span["outcome"], "accepted", "{line}");
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());
}

/// The knob BENCHMARKS.md and the README give busy deployments: the receiver's per-webhook line
/// and its span off, every other line kept.
#[tokio::test]
async fn the_per_webhook_line_can_be_turned_off_while_refusals_are_still_logged() {
    let broker = TestBroker::new(EventTypes::All).await;
    let mut relay = serve(&broker, &[("RUST_LOG", "info,polyai_relay::receiver::webhook=warn")]).await;
    assert_eq!(post(&relay, SECRET, "CA-quiet", "evt-quiet-1").await, 204);
    assert_eq!(post(&relay, "not-the-secret", "CA-quiet", "evt-quiet-2").await, 401);
    // Both lines would go down the same pipe in this order: once the second is read, the first
    // would have been too.
    let logs = relay.wait_for_log("webhook refused", Duration::from_secs(10)).await;
    assert!(!logs.contains("webhook enqueued"), "{logs}");
    assert!(logs.contains("broker connected"), "the relay's other lines are kept:\n{logs}");
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());
}

/// A webhook the broker returns (no queue bound for its type) is refused with a line that names
/// the routing key, which is what an operator has to bind.
#[tokio::test]
async fn a_returned_webhook_is_refused_with_a_line_naming_its_routing_key() {
    let broker = TestBroker::new(EventTypes::All).await;
    let mut relay = serve(&broker, &[]).await;
    let topology = &broker.topology;
    let channel = broker.channel().await;
    // Every type goes to the worker's queue and to the log stream: take both bindings away.
    let log = topology.conversations_log.as_deref().expect("tests keep the log");
    for queue in [topology.enrich_queue.as_str(), log] {
        let exchange = topology.events_exchange.as_str().into();
        channel.queue_unbind(queue.into(), exchange, "#".into(), Default::default()).await.unwrap();
    }
    assert_eq!(post(&relay, SECRET, "CA-returned", "evt-returned-1").await, 503);

    let logs = relay.wait_for_log("webhook refused", Duration::from_secs(10)).await;
    let line = logs.lines().find(|line| line.contains("webhook refused")).unwrap();
    let line: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let error = line["error"].as_str().unwrap_or_else(|| panic!("{line}"));
    assert!(error.contains("routing key `conversation.completed`"), "{line}");
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());
}

/// Refusals are logged once per kind and interval, but per project: a flood of refusals on one
/// project's path must not hide the first on another's (a secret rotated on one side only).
#[tokio::test]
async fn a_flood_of_refusals_on_one_project_hides_none_of_another() {
    let broker = TestBroker::new(EventTypes::All).await;
    let projects = TwoProjects::start().await;
    let mut env = broker.topology_env();
    env.extend([("AMQP_URL", broker.url.clone()), ("RELAY_PROJECTS_FILE", projects.file.clone())]);
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    relay.wait_ready().await;
    let (uk_path, us_path) = (format!("/polyai-events/{UK}"), format!("/polyai-events/{US}"));
    for i in 0..5 {
        assert_eq!(post_to(&relay, &uk_path, "not-the-secret", "CA-uk", &format!("evt-uk-{i}")).await, 401);
    }
    assert_eq!(post_to(&relay, &us_path, "not-the-secret", "CA-us", "evt-us-1").await, 401);
    let logs =
        relay.wait_for_log(&format!(r#""project":"{US}","outcome":"unauthorized""#), Duration::from_secs(10)).await;
    let refused = |project: &str| {
        let field = format!(r#""project":"{project}""#);
        logs.lines().filter(|line| line.contains("webhook refused") && line.contains(&field)).count()
    };
    assert_eq!((refused(UK), refused(US)), (1, 1), "one line for each project's refusals:\n{logs}");
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());
}

/// A body declared over `RELAY_MAX_BODY` is refused before it is read, and like every other
/// refusal it is counted and logged: PolyAI does not send a 413 again, so the line and the count
/// are all an operator gets.
#[tokio::test]
async fn a_body_declared_over_the_limit_is_counted_and_logged() {
    let broker = TestBroker::new(EventTypes::All).await;
    let mut relay = serve(&broker, &[("RELAY_MAX_BODY", "1KiB")]).await;
    // 2 MiB announced, not a byte of it sent: only the declared length can be refused (waiting
    // for the body would end in a 408).
    let address = relay.url("/").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!("POST /polyai-events HTTP/1.1\r\nhost: relay\r\ncontent-length: {}\r\n\r\n", 2 << 20);
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = stream.read(&mut answer).await.unwrap();
    let status = String::from_utf8_lossy(&answer[..read]).lines().next().unwrap_or_default().to_owned();
    assert!(status.contains("413"), "{status}");

    let logs = relay.wait_for_log(r#""outcome":"too_large""#, Duration::from_secs(10)).await;
    let line = logs.lines().find(|line| line.contains(r#""outcome":"too_large""#)).unwrap();
    assert!(line.contains("webhook refused"), "{line}");
    let metrics = http().get(relay.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let counted =
        metrics.lines().find(|line| line.starts_with("relay_webhook_requests_total") && line.contains("too_large"));
    assert!(counted.is_some_and(|line| line.ends_with(" 1")), "{metrics}");
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());
}
