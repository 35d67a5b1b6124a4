//! A misconfiguration stops start-up with one clear line naming the variable.

use crate::process::{run_to_exit, RelayProcess};

const SECRET: (&str, &str) = ("POLYAI_WEBHOOK_SECRET", "whsec_config_test_value");
const AMQP: (&str, &str) = ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");

/// How a refused setting ends the process: clap's usage error for a value its parser refuses,
/// the relay's own failure for a setting that parses but cannot work.
#[derive(Clone, Copy)]
pub enum Refused {
    ByParser = 2,
    AtStartUp = 1,
}

async fn fails_naming(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    refused(Refused::AtStartUp, args, env, expected).await
}

pub async fn refused(how: Refused, args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let (code, stderr) = run_to_exit(args, env).await;
    assert_eq!(code, Some(how as i32), "{stderr}");
    let line = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
    for word in expected {
        assert!(stderr.contains(word), "`{word}` missing from: {stderr}");
    }
    assert!(!line.is_empty());
}

#[tokio::test]
async fn serving_without_a_webhook_secret_names_the_variable() {
    fails_naming(&["serve"], &[AMQP], &["POLYAI_WEBHOOK_SECRET"]).await;
}

#[tokio::test]
async fn a_webhook_path_the_router_would_read_as_a_parameter_is_refused_with_a_line_not_a_panic() {
    for path in ["/:hook", "/{hook}", "/a{", "polyai-events"] {
        let (code, stderr) = run_to_exit(&["serve"], &[SECRET, AMQP, ("RELAY_PATH", path)]).await;
        assert_eq!(code, Some(Refused::AtStartUp as i32), "{path}: {stderr}");
        assert!(stderr.contains("RELAY_PATH") && !stderr.contains("panicked"), "{path}: {stderr}");
    }
}

#[tokio::test]
async fn an_unknown_region_is_refused() {
    let env = [SECRET, AMQP, ("POLYAI_API_KEY", "k"), ("POLYAI_REGION", "mars")];
    fails_naming(&["run"], &env, &["POLYAI_REGION", "mars", "us"]).await;
}

#[tokio::test]
async fn a_runtime_url_on_the_build_host_family_is_refused_with_the_right_host() {
    let env = [
        SECRET,
        AMQP,
        ("POLYAI_API_KEY", "k"),
        ("POLYAI_BASE_URL", "https://api.us.poly.ai"),
        ("POLYAI_ACCOUNT_ID", "ws-1"),
        ("POLYAI_PROJECT_ID", "PROJECT-1"),
    ];
    fails_naming(&["run"], &env, &["POLYAI_BASE_URL", "api.us-1.platform.polyai.app"]).await;
}

#[tokio::test]
async fn a_worker_without_an_api_key_names_the_variable() {
    fails_naming(&["work"], &[AMQP, ("POLYAI_REGION", "us")], &["POLYAI_API_KEY"]).await;
}

#[tokio::test]
async fn reconciliation_reaching_further_back_than_the_ledger_remembers_is_refused() {
    // Nothing is reached: the broker URL points nowhere, and the check comes first.
    let api = [
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("POLYAI_API_KEY", "k"),
        ("POLYAI_REGION", "us"),
        ("POLYAI_ACCOUNT_ID", "ws-1"),
        ("POLYAI_PROJECT_ID", "PROJECT-1"),
    ];
    let continuous = [api.as_slice(), &[("RELAY_RECONCILE_EVERY", "15m"), ("RELAY_RECONCILE_WINDOW", "14d")]].concat();
    fails_naming(&["work"], &continuous, &["RELAY_RECONCILE_WINDOW", "RELAY_LOG_RETENTION, 7days"]).await;
    fails_naming(&["reconcile", "--since", "30d"], &api, &["--since", "RELAY_LOG_RETENTION, 7days"]).await;
    let kept_longer = [api.as_slice(), &[("RELAY_LOG_RETENTION", "31d")]].concat();
    let (_, stderr) = run_to_exit(&["reconcile", "--since", "30d"], &kept_longer).await;
    assert!(!stderr.contains("RELAY_LOG_RETENTION"), "a ledger kept longer covers it: {stderr}");
}

#[tokio::test]
async fn bad_durations_and_sizes_name_their_variable() {
    let deadline = [SECRET, AMQP, ("RELAY_ACK_DEADLINE", "3")];
    refused(Refused::ByParser, &["serve"], &deadline, &["RELAY_ACK_DEADLINE", "no unit"]).await;
    refused(Refused::ByParser, &["serve"], &[SECRET, AMQP, ("RELAY_MAX_BODY", "lots")], &["RELAY_MAX_BODY"]).await;
}

#[tokio::test]
async fn a_body_memory_that_cannot_hold_the_largest_body_is_refused() {
    let small = [SECRET, AMQP, ("RELAY_MAX_BODY", "1MiB"), ("RELAY_BODY_MEMORY", "512KiB")];
    fails_naming(&["serve"], &small, &["RELAY_BODY_MEMORY", "RELAY_MAX_BODY", "could never be read"]).await;
}

#[tokio::test]
async fn a_secret_given_twice_is_refused() {
    let dir = std::env::temp_dir().join(format!("relay-config-{}", uuid::Uuid::new_v4()));
    std::fs::write(&dir, "from-file").unwrap();
    let file = dir.to_string_lossy().into_owned();
    fails_naming(&["serve"], &[SECRET, AMQP, ("POLYAI_WEBHOOK_SECRET_FILE", &file)], &["not both"]).await;
    std::fs::remove_file(dir).unwrap();
}

#[tokio::test]
async fn without_a_broker_url_the_relay_runs_on_the_embedded_queue_and_says_so() {
    let dir = crate::backend::TempDir::new();
    let data_dir = dir.0.display().to_string();
    let env = [
        SECRET,
        ("RELAY_DATA_DIR", data_dir.as_str()),
        ("POLYAI_API_KEY", "k"),
        ("POLYAI_BASE_URL", "http://127.0.0.1:9"),
        ("POLYAI_ACCOUNT_ID", "ws-1"),
        ("POLYAI_PROJECT_ID", "PROJECT-1"),
    ];
    let mut relay = RelayProcess::spawn(&["run"], &env).await;
    relay.wait_ready().await;
    relay.terminate();
    assert_eq!(relay.wait_for_exit(std::time::Duration::from_secs(10)).await, Some(0));
    assert!(relay.logs().contains("embedded queue"), "{}", relay.logs());
    assert!(dir.0.join("queue.sqlite3").exists());
}

#[tokio::test]
async fn a_broker_url_of_another_scheme_is_refused() {
    fails_naming(&["serve"], &[SECRET, ("AMQP_URL", "http://127.0.0.1:5672")], &["AMQP_URL", "amqp://"]).await;
}

#[tokio::test]
async fn a_second_process_on_the_same_embedded_queue_is_refused() {
    let dir = crate::backend::TempDir::new();
    let data_dir = dir.0.display().to_string();
    let mut first = RelayProcess::spawn(&["serve"], &[SECRET, ("RELAY_DATA_DIR", &data_dir)]).await;
    first.wait_ready().await;
    fails_naming(&["serve"], &[SECRET, ("RELAY_DATA_DIR", &data_dir)], &["RELAY_DATA_DIR", "in use"]).await;
    first.terminate();
    assert_eq!(first.wait_for_exit(std::time::Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn the_broker_url_can_come_from_a_file() {
    let broker = crate::broker::TestBroker::new(polyai_relay::config::EventTypes::All).await;
    let dir = crate::backend::TempDir::new();
    let file = dir.0.join("amqp-url");
    // Written as `echo` would: the trailing newline is not part of the URL.
    std::fs::write(&file, format!("{}\n", broker.url)).unwrap();
    let file = file.display().to_string();
    let mut env = broker.topology_env();
    env.push(("AMQP_URL_FILE", file.clone()));
    let mut env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    env.push(SECRET);
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    relay.wait_ready().await;
    relay.terminate();
    assert_eq!(relay.wait_for_exit(std::time::Duration::from_secs(10)).await, Some(0));

    fails_naming(&["serve"], &[SECRET, AMQP, ("AMQP_URL_FILE", &file)], &["AMQP_URL", "not both"]).await;
    fails_naming(&["serve"], &[SECRET, ("AMQP_URL_FILE", "/nonexistent/amqp-url")], &["AMQP_URL_FILE"]).await;
}

#[tokio::test]
async fn a_spool_without_a_broker_is_refused() {
    let dir = crate::backend::TempDir::new();
    let spool = dir.0.join("spool").display().to_string();
    let env = [SECRET, ("RELAY_SPOOL_DIR", spool.as_str()), ("RELAY_DATA_DIR", &dir.0.display().to_string())];
    fails_naming(&["serve"], &env, &["RELAY_SPOOL_DIR", "AMQP_URL"]).await;
}

#[tokio::test]
async fn a_bad_spool_size_names_its_variable() {
    let env = [SECRET, AMQP, ("RELAY_SPOOL_MAX", "lots")];
    refused(Refused::ByParser, &["serve"], &env, &["RELAY_SPOOL_MAX", "lots"]).await;
}

/// A port already taken stops start-up with its one line, before anything reaches for the
/// broker: no connection attempt runs beside the error, so no warning of it and no panic of the
/// broker connection's thread as the process winds down can follow that line.
#[tokio::test]
async fn a_port_in_use_stops_start_up_with_its_line_before_the_broker_is_reached() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    // A broker address that takes connections and never answers: one that reached it stays
    // in its backlog, to be found once the process has exited.
    let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    broker.set_nonblocking(true).unwrap();
    let amqp_url = format!("amqp://guest:guest@{}/%2f", broker.local_addr().unwrap());
    let env = [SECRET, ("AMQP_URL", &amqp_url), ("RELAY_LISTEN", "127.0.0.1:0"), ("RELAY_ADMIN_LISTEN", &address)];
    let (code, stderr) = run_to_exit(&["serve"], &env).await;
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(last.contains("RELAY_ADMIN_LISTEN") && last.contains("in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let reached = broker.accept();
    assert!(matches!(&reached, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{reached:?}");
}

/// An API key goes into a request header: one holding a character no header can carry is refused
/// with the rest of the settings, naming its variable but never its value, before the broker is
/// reached (as with a port in use, above).
#[tokio::test]
async fn an_api_key_no_header_can_carry_is_refused_before_the_broker_is_reached() {
    let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    broker.set_nonblocking(true).unwrap();
    let amqp_url = format!("amqp://guest:guest@{}/%2f", broker.local_addr().unwrap());
    let base = [SECRET, ("AMQP_URL", &amqp_url), ("POLYAI_REGION", "us"), ("RELAY_LISTEN", "127.0.0.1:0")];
    let cases = [
        ("POLYAI_API_KEY", vec![("POLYAI_API_KEY", "key-with\x7fdelete")]),
        (
            "POLYAI_PLATFORM_API_KEY",
            vec![("POLYAI_API_KEY", "fine"), ("POLYAI_PLATFORM_API_KEY", "key-with\x7fdelete")],
        ),
    ];
    for (variable, keys) in cases {
        let env: Vec<(&str, &str)> =
            base.iter().copied().chain(keys).chain([("RELAY_ADMIN_LISTEN", "127.0.0.1:0")]).collect();
        let (code, stderr) = run_to_exit(&["run"], &env).await;
        assert_eq!(code, Some(1), "{stderr}");
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(last.contains(&format!("{variable} holds a character an HTTP header cannot carry")), "{stderr}");
        assert!(!stderr.contains("key-with"), "the key's value is never said: {stderr}");
    }
    let reached = broker.accept();
    assert!(matches!(&reached, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{reached:?}");
}
