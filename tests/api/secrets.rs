//! Secrets never reach logs, errors or help text, even at trace level.

use std::time::Duration;

use polyai_relay::signature::sign;

use crate::{
    backend::{Backend, TestQueue},
    broker::{BrokerUser, TestBroker},
    fake_polyai::{FakePolyai, Reply, ACCOUNT, API_KEY, PROJECT},
    helpers::{completed, http, now, post_event},
    process::{as_refs, run_to_exit, run_to_exit_with_stdout, RelayProcess},
};

const WEBHOOK_SECRET: &str = "whsec_never_log_me_8d2f";
const PREVIOUS: &str = "whsec_never_log_me_either_4c1a";
/// The Webhooks and Agents APIs' key, apart from the v3 one.
const PLATFORM_KEY: &str = "plat_never_log_me_71be";
/// A broker password no user has: for commands that fail before they connect.
const BROKER_PASSWORD: &str = "pw-never-log-me-0a9e";

fn assert_clean(text: &str) {
    for secret in [WEBHOOK_SECRET, PREVIOUS, API_KEY, PLATFORM_KEY, BROKER_PASSWORD, "guest:guest"] {
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

/// Every secret set, at trace level, against the test's own topology (its log too: the broker's
/// cleanup removes exactly those), a broker user of its own and `polyai`.
fn trace_env(broker: &TestBroker, user: &BrokerUser, polyai: &FakePolyai) -> Vec<(&'static str, String)> {
    let mut env = broker.topology_env();
    env.extend(
        [
            ("RUST_LOG", "trace"),
            ("POLYAI_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("POLYAI_WEBHOOK_SECRET_PREVIOUS", PREVIOUS),
            ("POLYAI_API_KEY", API_KEY),
            ("POLYAI_PLATFORM_API_KEY", PLATFORM_KEY),
            ("POLYAI_BASE_URL", &polyai.base_url),
            ("POLYAI_ACCOUNT_ID", ACCOUNT),
            ("POLYAI_PROJECT_ID", PROJECT),
            ("AMQP_URL", &user.url()),
        ]
        .map(|(name, value)| (name, value.to_owned())),
    );
    env
}

#[tokio::test]
async fn no_secret_appears_in_trace_logs_of_a_busy_relay() {
    let broker = TestBroker::new(polyai_relay::config::EventTypes::All).await;
    let user = BrokerUser::create().await;
    let polyai = FakePolyai::start().await;
    polyai.script([Reply::Status(401), Reply::Status(500)]);
    let env = trace_env(&broker, &user, &polyai);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    env.extend([
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

/// Every command that takes a secret, with every secret set: its errors and its help show none.
const COMMANDS: [&[&str]; 12] = [
    &["run"],
    &["serve"],
    &["work"],
    &["check"],
    &["backfill", "--since", "1h"],
    &["reconcile", "--since", "1h"],
    &["dead", "list"],
    &["dead", "replay", "--all"],
    &["log", "replay", "--since", "1h"],
    &["register", "--list"],
    &["send", "--url", "http://127.0.0.1:1/polyai-events"],
    &["mock-api"],
];

#[tokio::test]
async fn config_errors_and_help_never_show_secret_values() {
    let broker_url = format!("amqp://relay:{BROKER_PASSWORD}@127.0.0.1:5672/%2f");
    let env = [
        ("POLYAI_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("POLYAI_WEBHOOK_SECRET_PREVIOUS", PREVIOUS),
        ("POLYAI_API_KEY", API_KEY),
        ("POLYAI_PLATFORM_API_KEY", PLATFORM_KEY),
        ("MOCK_API_KEY", API_KEY),
        ("MOCK_API_PLATFORM_KEY", PLATFORM_KEY),
        ("MOCK_API_EMIT_SECRET", WEBHOOK_SECRET),
        ("POLYAI_REGION", "mars"),
        ("AMQP_URL", &broker_url),
    ];
    for command in COMMANDS {
        // An unknown region, a broker that refuses the password: each command fails on one of
        // them. (`serve` keeps trying the broker, as `a_broker_refusing…` shows; `send` and
        // `mock-api` read neither, the one would post, the other serve.)
        if !matches!(command[0], "serve" | "send" | "mock-api") {
            let (code, stderr) = run_to_exit(command, &env).await;
            assert_eq!(code, Some(1), "{command:?}: {stderr}");
            assert_clean(&stderr);
        }
        let mut help = crate::process::relay_command(&[command, &["--help"]].concat());
        for (name, value) in env {
            help.env(name, value);
        }
        let output = help.output().await.unwrap();
        assert!(output.status.success(), "{command:?} --help");
        let text = String::from_utf8_lossy(&output.stdout);
        assert_clean(&text);
    }
}

/// The commands an operator runs by hand, at trace level, against a broker that takes their
/// user and an API that answers: their output shows no secret, the broker's password included.
#[tokio::test]
async fn the_one_shot_commands_show_no_secret_even_at_trace_level() {
    let broker = TestBroker::new(polyai_relay::config::EventTypes::All).await;
    let user = BrokerUser::create().await;
    let polyai = FakePolyai::start().await;
    let env = trace_env(&broker, &user, &polyai);
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let commands: [&[&str]; 6] = [
        &["check"],
        &["reconcile", "--since", "1h", "--settle", "0s"],
        &["backfill", "--since", "1h", "--dry-run"],
        &["dead", "list"],
        &["dead", "replay", "--all", "--dry-run"],
        &["log", "replay", "--since", "1h", "--dry-run"],
    ];
    for command in commands {
        let (code, stdout, stderr) = run_to_exit_with_stdout(command, &env).await;
        assert_eq!(code, Some(0), "{command:?}:\n{stdout}\n{stderr}");
        // (lapin's own are capped at debug: its frames hold the login.)
        assert!(
            stderr.contains("TRACE") || stderr.contains("DEBUG"),
            "{command:?}: debug logs were captured:\n{stderr}"
        );
        for text in [&stdout, &stderr] {
            assert_clean(text);
            assert_no_password(&user, text);
        }
    }
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
