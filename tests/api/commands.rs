//! `check` and `register`, run as the built binary against the fake and the mock API.

use axum::{http::StatusCode, routing::post, Json, Router};
use polyai_relay_devtools::mock_api::{MockApi, MockConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{
    broker::amqp_url,
    fake_polyai::{conversation, FakePolyai, Reply, ACCOUNT, API_KEY, PROJECT},
    process::{relay_command, run_to_exit_with_stdout},
};

/// What a working `check` needs: the fake API's settings, a webhook secret and the broker.
fn check_env<'a>(fake: &'a FakePolyai, amqp: &'a str) -> [(&'static str, &'a str); 6] {
    [
        ("POLYAI_API_KEY", API_KEY),
        ("POLYAI_BASE_URL", fake.base_url.as_str()),
        ("POLYAI_ACCOUNT_ID", ACCOUNT),
        ("POLYAI_PROJECT_ID", PROJECT),
        ("POLYAI_WEBHOOK_SECRET", "whsec_check"),
        ("AMQP_URL", amqp),
    ]
}

/// `check`'s stdout, with its logs (stderr) appended: a secret must be in neither.
async fn check(fake: &FakePolyai, amqp: &str) -> (Option<i32>, String) {
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["check"], &check_env(fake, amqp)).await;
    (code, format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn check_passes_when_everything_works_and_warns_on_an_empty_list() {
    let fake = FakePolyai::start().await;
    fake.script_list([Reply::Json(json!({"conversations": [conversation("CA1")], "cursor": null}))]);
    let (code, stdout) = check(&fake, &amqp_url()).await;
    assert_eq!(code, Some(0), "{stdout}");
    let url = url::Url::parse(&amqp_url()).unwrap();
    let broker = format!("✓ RabbitMQ at {}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672));
    assert!(stdout.contains(&broker), "{stdout}");
    assert!(stdout.contains("✓ the API key works"), "{stdout}");
    assert!(fake.list_requests()[0].query.contains("limit=1"));

    // No conversations: the key works, the window or environment is probably wrong.
    let (code, stdout) = check(&fake, &amqp_url()).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("! the API key works, but no live conversation"), "{stdout}");
}

#[tokio::test]
async fn check_fails_on_webhook_settings_a_receiver_would_refuse() {
    let fake = FakePolyai::start().await;
    let dir = std::env::temp_dir().join(format!("relay-check-{}", uuid::Uuid::new_v4()));
    std::fs::write(&dir, "\n").unwrap();
    let empty = dir.display().to_string();
    let amqp = amqp_url();
    let api = [
        ("POLYAI_API_KEY", API_KEY),
        ("POLYAI_BASE_URL", fake.base_url.as_str()),
        ("POLYAI_ACCOUNT_ID", ACCOUNT),
        ("POLYAI_PROJECT_ID", PROJECT),
        ("AMQP_URL", amqp.as_str()),
    ];
    let refused: [(&[(&str, &str)], &str); 3] = [
        (&[("POLYAI_WEBHOOK_SECRET_FILE", &empty)], "is empty"),
        (&[("POLYAI_WEBHOOK_SECRET", "whsec_a"), ("POLYAI_WEBHOOK_SECRET_PREVIOUS", " ")], "PREVIOUS is empty"),
        (&[("POLYAI_WEBHOOK_SECRET", "whsec_a"), ("RELAY_PATH", "/{hook}")], "RELAY_PATH"),
    ];
    for (webhook, expected) in refused {
        let env = [&api[..], webhook].concat();
        let (code, stdout, _) = run_to_exit_with_stdout(&["check"], &env).await;
        assert_eq!(code, Some(1), "{webhook:?}: {stdout}");
        assert!(stdout.lines().any(|line| line.starts_with("✗") && line.contains(expected)), "{webhook:?}: {stdout}");
    }
    let env = [&api[..], &[("POLYAI_WEBHOOK_SECRET", "whsec_a")]].concat();
    let (_, stdout, _) = run_to_exit_with_stdout(&["check"], &env).await;
    assert!(stdout.contains("✓ receiver settings: `serve` would start with them"), "{stdout}");
    std::fs::remove_file(dir).unwrap();
}

/// `check` reads every setting as the long-running commands do, not only the webhook's: one it
/// passed would otherwise stop `serve` or `work` at start-up.
#[tokio::test]
async fn check_fails_on_any_setting_serve_or_work_would_refuse() {
    let fake = FakePolyai::start().await;
    let amqp = amqp_url();
    let base = check_env(&fake, &amqp);
    let refused = [
        (("RELAY_HEADER_TIMEOUT", "5"), "✗ receiver settings"),
        (("RELAY_ACK_DEADLINE", "0s"), "✗ receiver settings"),
        (("RELAY_API_CONCURRENCY", "0"), "✗ worker settings"),
        (("RELAY_RECONCILE_EVERY", "yes please"), "✗ worker settings"),
    ];
    for ((variable, value), expected) in refused {
        let env = [&base[..], &[(variable, value)]].concat();
        let (code, stdout, _) = run_to_exit_with_stdout(&["check"], &env).await;
        assert_eq!(code, Some(1), "{variable}={value}: {stdout}");
        let line = stdout.lines().find(|line| line.starts_with(expected)).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(variable), "{variable}={value}: {stdout}");
    }
    let (code, stdout, _) = run_to_exit_with_stdout(&["check"], &base).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("✓ worker settings: `work` would start with them"), "{stdout}");

    // A worker's deployment: no webhook secret, a warning, not a failure.
    let worker_only: Vec<_> = base.iter().filter(|(name, _)| *name != "POLYAI_WEBHOOK_SECRET").copied().collect();
    let (code, stdout, _) = run_to_exit_with_stdout(&["check"], &worker_only).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("! no webhook secret is set"), "{stdout}");
    assert!(stdout.contains("✓ worker settings"), "{stdout}");

    // Settings given as flags are not the environment the start-up checks read: they say so
    // rather than report what the flags override.
    let (_, stdout, _) = run_to_exit_with_stdout(&["check", "--amqp-url", &amqp], &base).await;
    assert!(stdout.contains("! start-up settings not checked"), "{stdout}");
    assert!(!stdout.contains("worker settings"), "{stdout}");
}

#[tokio::test]
async fn check_names_the_fix_for_each_api_failure() {
    for (status, fix) in [(401, "check POLYAI_API_KEY"), (403, "lacks permission"), (404, "wrong host family or ids")] {
        let fake = FakePolyai::start().await;
        fake.probe_answers(Reply::Status(status));
        let (code, stdout) = check(&fake, &amqp_url()).await;
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stdout.contains(&format!("✗ API: {status}")), "{stdout}");
        assert!(stdout.contains(fix), "{status}: {stdout}");
    }
}

#[tokio::test]
async fn check_reports_an_unreachable_broker_without_its_password() {
    let fake = FakePolyai::start().await;
    let (code, stdout) = check(&fake, "amqp://guest:s3cret-pass@127.0.0.1:1/%2f").await;
    assert_eq!(code, Some(1));
    assert!(stdout.contains("✗ RabbitMQ at 127.0.0.1:1"), "{stdout}");
    assert!(!stdout.contains("s3cret-pass"), "{stdout}");
}

async fn register(platform_url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["register"];
    all.extend_from_slice(args);
    let env = [("POLYAI_PLATFORM_URL", platform_url), ("POLYAI_PLATFORM_API_KEY", "mock-api-key")];
    run_to_exit_with_stdout(&all, &env).await
}

fn secret_of(stdout: &str) -> String {
    stdout.lines().find_map(|l| l.strip_prefix("signing secret: ")).expect("a secret line").to_owned()
}

#[tokio::test]
async fn register_creates_lists_and_rotates_endpoints_and_explains_the_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = MockApi::start(MockConfig::default(), listener, CancellationToken::new()).await.unwrap();
    let base = mock.base_url();

    let (code, stdout, stderr) = register(&base, &["--url", "https://relay.example.com/polyai-events"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("registered endpoint whe_") && stdout.contains("via /v1/webhook-endpoints"), "{stdout}");
    let first = secret_of(&stdout);
    assert!(!first.is_empty());
    assert!(stdout.contains("shows it only once"));
    let registered = stdout.lines().find_map(|l| l.strip_prefix("registered endpoint ")).expect("the id");
    let id = registered.split_whitespace().next().unwrap().to_owned();

    let (code, stdout, _) = register(&base, &["--list"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&id) && stdout.contains("https://relay.example.com/polyai-events"), "{stdout}");
    assert!(!stdout.contains(&first), "a listing never shows a secret");

    let (code, stdout, _) = register(&base, &["--rotate", &id]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_ne!(secret_of(&stdout), first);

    for i in 0..9 {
        let url = format!("https://relay{i}.example.com/polyai-events");
        assert_eq!(register(&base, &["--url", &url]).await.0, Some(0));
    }
    let (code, _, stderr) = register(&base, &["--url", "https://one-too-many.example.com/"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("409") && stderr.contains("10 webhook endpoints"), "{stderr}");
}

/// `register` run twice for one URL makes one endpoint: a second would have PolyAI deliver each
/// event twice, the copy signed with a secret the relay does not hold.
#[tokio::test]
async fn register_run_again_for_a_registered_url_makes_no_second_endpoint() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = MockApi::start(MockConfig::default(), listener, CancellationToken::new()).await.unwrap();
    let base = mock.base_url();
    let url = "https://again.example.com/polyai-events";
    let (code, stdout, stderr) = register(&base, &["--url", url]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let id = stdout.lines().find_map(|l| l.strip_prefix("registered endpoint ")).expect("the id");
    let id = id.split_whitespace().next().unwrap().to_owned();

    let (code, stdout, stderr) = register(&base, &["--url", "https://again.example.com"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("already registered, as endpoint {id}")), "{stdout}");
    assert!(!stdout.contains("signing secret:"), "no secret shown again: {stdout}");
    let (_, listed, _) = register(&base, &["--list"]).await;
    assert_eq!(listed.lines().filter(|line| line.contains(url)).count(), 1, "{listed}");
}

/// Without `--events`, the endpoint subscribes to what the relay forwards (RELAY_EVENTS): a type
/// forwarded but not subscribed to would never be sent. `*` names no type: the default ones.
#[tokio::test]
async fn register_subscribes_to_the_types_the_relay_forwards() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = MockApi::start(MockConfig::default(), listener, CancellationToken::new()).await.unwrap();
    let base = mock.base_url();
    for (host, events) in [("completed", "conversation.completed"), ("all", "*")] {
        let mut command = relay_command(&["register", "--url", &format!("https://{host}.example.com/")]);
        command
            .env("POLYAI_PLATFORM_URL", &base)
            .env("POLYAI_PLATFORM_API_KEY", "mock-api-key")
            .env("RELAY_EVENTS", events);
        let output = command.output().await.expect("binary runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let (code, stdout, _) = register(&base, &["--list"]).await;
    assert_eq!(code, Some(0));
    let types_of = |host: &str| {
        let line = stdout.lines().find(|line| line.contains(&format!("https://{host}.example.com/"))).unwrap();
        line.split_whitespace().last().unwrap().to_owned()
    };
    assert_eq!(types_of("completed"), "conversation.completed", "{stdout}");
    assert_eq!(types_of("all"), "conversation.completed,handoff.created", "{stdout}");
}

/// The relay has a route for its path only: a bare base gets the path, a trailing slash is
/// dropped. Either left as given, every delivery would get a 404, which PolyAI does not retry.
#[tokio::test]
async fn register_sends_the_url_the_relay_receives_webhooks_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = MockApi::start(MockConfig::default(), listener, CancellationToken::new()).await.unwrap();
    let base = mock.base_url();
    for url in ["https://bare.example.com", "https://slash.example.com/polyai-events/"] {
        let (code, stdout, stderr) = register(&base, &["--url", url]).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
    }
    let mut command = relay_command(&["register", "--url", "https://own.example.com/"]);
    command
        .env("POLYAI_PLATFORM_URL", &base)
        .env("POLYAI_PLATFORM_API_KEY", "mock-api-key")
        .env("RELAY_PATH", "/hooks/polyai");
    let output = command.output().await.expect("binary runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let (code, stdout, _) = register(&base, &["--list"]).await;
    assert_eq!(code, Some(0));
    for url in [
        "https://bare.example.com/polyai-events ",
        "https://slash.example.com/polyai-events ",
        "https://own.example.com/hooks/polyai ",
    ] {
        assert!(stdout.contains(url), "{url} missing:\n{stdout}");
    }
}

#[tokio::test]
async fn register_refuses_a_plain_http_url_before_sending_anything() {
    let (code, _, stderr) = register("http://127.0.0.1:9", &["--url", "http://relay.example.com/"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("https://"), "{stderr}");
}

#[tokio::test]
async fn register_falls_back_to_the_quickstart_path_when_the_reference_path_is_missing() {
    let received = std::sync::Arc::new(std::sync::Mutex::new(None::<Value>));
    let seen = received.clone();
    let app = Router::new().route("/v1/webhook-endpoints", post(|| async { StatusCode::NOT_FOUND })).route(
        "/v1/webhooks/endpoints",
        post(move |Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() = Some(body);
                (StatusCode::CREATED, Json(json!({"id": "ep_quick", "signing_secret": "whsec_quick"})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (code, stdout, stderr) = register(&base, &["--url", "https://relay.example.com/hooks", "--name", "prod"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("registered endpoint ep_quick (via /v1/webhooks/endpoints)"), "{stdout}");
    assert_eq!(secret_of(&stdout), "whsec_quick");
    let body = received.lock().unwrap().clone().unwrap();
    assert_eq!(body["url"], "https://relay.example.com/hooks");
    assert_eq!(body["description"], "prod");
    assert_eq!(body["events"], json!(["conversation.completed", "handoff.created"]));
}

#[tokio::test]
async fn register_fails_on_an_answer_that_names_no_endpoint() {
    let app = Router::new().route("/v1/webhook-endpoints", post(|| async { (StatusCode::CREATED, "<html>ok</html>") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (code, stdout, stderr) = register(&base, &["--url", "https://relay.example.com/polyai-events"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("without the new endpoint's id") && stderr.contains("register --list"), "{stderr}");
    assert!(!stdout.contains("registered endpoint"), "{stdout}");
}

/// A new secret exists only in `register`'s output: one that cannot be written there (the reader
/// gone) fails the command and says how to get another, where any other report line is dropped.
#[tokio::test]
async fn a_new_secret_that_cannot_be_written_fails_register() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = MockApi::start(MockConfig::default(), listener, CancellationToken::new()).await.unwrap();
    let mut command = relay_command(&["register", "--url", "https://relay.example.com/polyai-events"]);
    command.env("POLYAI_PLATFORM_URL", mock.base_url()).env("POLYAI_PLATFORM_API_KEY", "mock-api-key");
    let mut child = command.spawn().expect("binary runs");
    // The read end closes before anything is written to it.
    drop(child.stdout.take());
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("exits in time")
        .expect("exit status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be written") && stderr.contains("--rotate whe_"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
