//! Secrets never reach logs, errors or help text, even at trace level.

use std::time::Duration;

use polyai_relay::signature::sign;

use crate::{
    backend::{Backend, TestQueue},
    broker::{BrokerUser, TestBroker},
    fake_polyai::{FakePolyai, Reply, ACCOUNT, API_KEY, PROJECT},
    helpers::{completed, http, now, post_event},
    process::{as_refs, run_to_exit, RelayProcess},
};

const WEBHOOK_SECRET: &str = "whsec_never_log_me_8d2f";
const PREVIOUS: &str = "whsec_never_log_me_either_4c1a";

fn assert_clean(text: &str) {
    for secret in [WEBHOOK_SECRET, PREVIOUS, API_KEY, "guest:guest"] {
        assert!(!text.contains(secret), "`{secret}` leaked into:\n{text}");
    }
}

/// The relay connects as a user of its own whose password appears nowhere else: `guest` would
/// prove nothing of a password that is not `guest`.
fn assert_no_password(user: &BrokerUser, text: &str) {
    assert!(!text.contains(user.password()), "the broker password leaked into:\n{text}");
    // Also as bytes: a frame's Debug output shows its login response as a list of numbers.
    let bytes: Vec<String> = user.password().bytes().map(|b| b.to_string()).collect();
    assert!(!text.contains(&bytes.join(", ")), "the broker password leaked as bytes into:\n{text}");
}

#[tokio::test]
async fn no_secret_appears_in_trace_logs_of_a_busy_relay() {
    let broker = TestBroker::new(polyai_relay::config::EventTypes::All).await;
    let user = BrokerUser::create().await;
    let amqp_url = user.url();
    let polyai = FakePolyai::start().await;
    polyai.script([Reply::Status(401), Reply::Status(500)]);
    // Every name the test's own (its log too): the broker's cleanup removes exactly those.
    let topology = broker.topology_env();
    let mut env: Vec<(&str, &str)> = topology.iter().map(|(name, value)| (*name, value.as_str())).collect();
    env.extend([
        ("RUST_LOG", "trace"),
        ("POLYAI_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("POLYAI_WEBHOOK_SECRET_PREVIOUS", PREVIOUS),
        ("POLYAI_API_KEY", API_KEY),
        ("POLYAI_BASE_URL", &polyai.base_url),
        ("POLYAI_ACCOUNT_ID", ACCOUNT),
        ("POLYAI_PROJECT_ID", PROJECT),
        ("AMQP_URL", &amqp_url),
        ("RELAY_AUTH_PROBE_INTERVAL", "100ms"),
        ("RELAY_RETRY_BASE_DELAY", "50ms"),
        ("RELAY_RETRY_MAX_DELAY", "100ms"),
    ]);
    let mut relay = RelayProcess::spawn(&["run"], &env).await;
    relay.wait_ready().await;
    let http = http();
    let body = completed("CAsecret");
    let ts = now().to_string();
    // Each path a secret is used on: the current one, the previous one, and a refusal.
    for (secret, status) in [(WEBHOOK_SECRET, 204), (PREVIOUS, 204), ("wrong", 401)] {
        let signature = sign(secret.as_bytes(), Some(&ts), body.as_bytes());
        let response = http
            .post(relay.url("/polyai-events"))
            .header("x-polyai-timestamp", &ts)
            .header("x-polyai-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    // The worker meets a 401 (pause, probe) and a 500 (retry) before it enriches both events.
    broker.next_message(broker.conversations_queue()).await;
    broker.next_message(broker.conversations_queue()).await;
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));
    let logs = relay.logs();
    assert!(logs.contains("TRACE") && logs.contains("event enriched"), "trace logs were captured");
    assert_clean(&logs);
    assert_no_password(&user, &logs);
}

/// A broker that refuses the password, and one that is not there: the failure lines name the
/// broker, never the password, in either log format.
#[tokio::test]
async fn a_broker_refusing_or_unreachable_is_logged_without_the_password() {
    let user = BrokerUser::create().await;
    let refused = user.url().replace(user.password(), "pw-refused-5e1d0c");
    let mut unreachable = reqwest::Url::parse(&user.url()).unwrap();
    unreachable.set_port(Some(1)).unwrap();
    for url in [refused.as_str(), unreachable.as_str()] {
        for format in ["json", "pretty"] {
            let env = [("POLYAI_WEBHOOK_SECRET", WEBHOOK_SECRET), ("AMQP_URL", url), ("RELAY_LOG_FORMAT", format)];
            let mut relay = RelayProcess::spawn(&["serve"], &env).await;
            let logs = relay.wait_for_log("cannot reach the broker", Duration::from_secs(30)).await;
            relay.terminate();
            assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{logs}");
            let logs = relay.logs();
            for password in [user.password(), "pw-refused-5e1d0c"] {
                assert!(!logs.contains(password), "{format}: the password leaked into:\n{logs}");
            }
            assert_clean(&logs);
        }
    }
}

#[tokio::test]
async fn config_errors_and_help_never_show_secret_values() {
    let env = [
        ("POLYAI_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("POLYAI_API_KEY", API_KEY),
        ("POLYAI_REGION", "mars"),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ];
    let (code, stderr) = run_to_exit(&["run"], &env).await;
    assert_eq!(code, Some(1));
    assert_clean(&stderr);

    let mut help = crate::process::relay_command(&["run", "--help"]);
    for (name, value) in env {
        help.env(name, value);
    }
    let output = help.output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("POLYAI_WEBHOOK_SECRET"), "{text}");
    assert_clean(&text);
}

/// An error answer that is not one of the API's shapes is quoted in the dead letter and the log.
/// A gateway in between may echo the request, key included: the key is cut out of it.
#[tokio::test]
async fn an_api_error_echoing_the_request_keeps_the_key_out_of_dead_letters_and_logs() {
    let queue = TestQueue::new(Backend::Embedded, polyai_relay::config::EventTypes::All).await;
    let polyai = FakePolyai::start().await;
    polyai.script([Reply::EchoHeaders(400)]);
    let env = queue.relay_env(&polyai.base_url, &[]);
    let mut relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
    relay.wait_ready().await;
    let (_, status) = post_event(&http(), &relay.url("/polyai-events"), "evt-echo".into()).await;
    assert_eq!(status, Some(204));
    let error = queue.next_dead_letter().await.error.unwrap_or_default();
    assert!(error.contains("x-api-key: [the API key]"), "the echo is quoted, the key cut out: {error}");
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));
    assert_clean(&error);
    assert_clean(&relay.logs());
}
