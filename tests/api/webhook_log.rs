//! The line each webhook leaves in the JSON log, as operators search it: one line per request,
//! its outcome and the event it carried in the `webhook` span's fields.

use std::time::Duration;

use polyai_relay::{config::EventTypes, signature::sign};

use crate::{
    broker::TestBroker,
    helpers::{completed, http, now},
    process::RelayProcess,
};

const SECRET: &str = "whsec_logged";

#[tokio::test]
async fn an_enqueued_webhook_is_logged_once_with_its_project_event_and_outcome() {
    let broker = TestBroker::new(EventTypes::All).await;
    let mut env = broker.topology_env();
    env.extend([("AMQP_URL", broker.url.clone()), ("POLYAI_WEBHOOK_SECRET", SECRET.into())]);
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    relay.wait_ready().await;

    let body = completed("CA-logged");
    let ts = now().to_string();
    let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
    let response = http()
        .post(relay.url("/polyai-events"))
        .header("x-polyai-timestamp", &ts)
        .header("x-polyai-signature", &signature)
        .header("x-polyai-event-id", "evt-logged-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

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
