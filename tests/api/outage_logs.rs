//! During an outage the log says so once and the metrics carry the volume: a stream of 503s
//! is not a stream of warning lines.

use futures_util::future::join_all;

use crate::{
    helpers::{http, post_event, SECRET},
    poll::poll_until,
    process::RelayProcess,
};

const REQUESTS: usize = 40;

#[tokio::test]
async fn a_stream_of_503s_logs_one_warning_and_counts_every_refusal() {
    // Nothing listens on port 1: every publish is refused at once.
    let env = [
        ("POLYAI_WEBHOOK_SECRET", SECRET),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("RELAY_ACK_DEADLINE", "200ms"),
    ];
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    let http = http();
    let url = relay.url("/polyai-events");
    for batch in 0..REQUESTS / 10 {
        let answers = join_all((0..10).map(|i| post_event(&http, &url, format!("evt-{batch}-{i}")))).await;
        assert!(answers.iter().all(|(_, status)| *status == Some(503)), "{answers:?}");
    }
    let metrics = http.get(relay.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let counted = format!(r#"relay_webhook_requests_total{{outcome="unavailable",project="default"}} {REQUESTS}"#);
    assert!(metrics.contains(&counted), "every refusal counted:\n{metrics}");
    // Several reconnect attempts, each counted, before the logs are read. The binary's reconnects
    // follow its own backoff and show only on its /metrics: asked until they are there.
    let failures = r#"relay_broker_connect_failures_total{role="publisher"}"#;
    poll_until(std::time::Duration::from_secs(10), || async {
        let metrics = http.get(relay.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
        let count = metrics.lines().find_map(|l| l.strip_prefix(failures)).map(|n| n.trim().parse::<u64>().unwrap());
        if count.is_some_and(|n| n >= 4) {
            Ok(())
        } else {
            Err(format!("reconnects never counted:\n{metrics}"))
        }
    })
    .await;

    relay.terminate();
    relay.wait_for_exit(std::time::Duration::from_secs(10)).await;
    let logs = relay.logs();
    let refused = logs.lines().filter(|line| line.contains("webhook refused")).count();
    assert_eq!(refused, 1, "one line for {REQUESTS} refusals:\n{logs}");
    let unreachable = logs.lines().filter(|line| line.contains("cannot reach the broker")).count();
    assert_eq!(unreachable, 1, "one line for every failed reconnect:\n{logs}");
}
