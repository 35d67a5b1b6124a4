//! Readiness as operators see it: `polyai-relay healthcheck` (the container's health check) and
//! the `relay_ready` gauge, against a running relay.

use std::time::Duration;

use polyai_relay::config::EventTypes;

use crate::{
    backend::{Backend, TestQueue},
    broker::TestBroker,
    fake_polyai::FakePolyai,
    helpers::{http, spawn_app_with, Options},
    process::{as_refs, run_to_exit_with_stdout, RelayProcess},
};

const UNREACHABLE_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

#[tokio::test]
async fn healthcheck_exits_0_with_one_line_when_the_relay_is_ready() {
    let app = spawn_app_with(Options::default()).await;
    let url = app.admin_url("/readyz");
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["healthcheck", "--url", &url], &[]).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("healthy") && stdout.contains("200"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[tokio::test]
async fn healthcheck_exits_1_while_the_relay_cannot_reach_its_broker() {
    let options = Options { amqp_url: Some(UNREACHABLE_BROKER.into()), wait_ready: false, ..Options::default() };
    let app = spawn_app_with(options).await;
    app.wait_for_readiness(503).await;
    // The URL through the environment, as a container would set it.
    let url = app.admin_url("/readyz");
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["healthcheck"], &[("RELAY_HEALTHCHECK_URL", &url)]).await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unhealthy") && stderr.contains("503"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[tokio::test]
async fn healthcheck_exits_1_when_nothing_listens() {
    // Port 1, as for the unreachable broker: a port freed here could be taken by a parallel test.
    let (code, _, stderr) = run_to_exit_with_stdout(&["healthcheck", "--url", "http://127.0.0.1:1/readyz"], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("could not be reached"), "{stderr}");
}

#[tokio::test]
async fn healthcheck_gives_up_on_a_server_that_never_answers() {
    // Connections queue in the backlog and are never accepted, so no answer ever comes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let started = std::time::Instant::now();
    let (code, _, stderr) = run_to_exit_with_stdout(&["healthcheck", "--url", &url], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("did not answer within 2s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// The gauge is read in a process of its own: tests in this binary share one metrics recorder.
async fn relay_ready_gauge(relay: &RelayProcess) -> String {
    let metrics = http().get(relay.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    metrics.lines().find(|line| line.starts_with("relay_ready{")).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn relay_ready_is_1_on_metrics_while_readyz_answers_200() {
    let broker = TestBroker::new(EventTypes::All).await;
    let mut env = broker.topology_env();
    env.extend([("AMQP_URL", broker.url.clone()), ("POLYAI_WEBHOOK_SECRET", "whsec_gauge".into())]);
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    relay.wait_ready().await;
    assert_eq!(relay_ready_gauge(&relay).await, r#"relay_ready{command="serve"} 1"#, "{}", relay.logs());
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn relay_ready_is_0_on_metrics_while_readyz_answers_503() {
    let env = [("AMQP_URL", UNREACHABLE_BROKER), ("POLYAI_WEBHOOK_SECRET", "whsec_gauge")];
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    // Nothing has probed /readyz yet: the scrape itself evaluates readiness.
    assert_eq!(relay_ready_gauge(&relay).await, r#"relay_ready{command="serve"} 0"#, "{}", relay.logs());
    assert_eq!(http().get(relay.admin_url("/readyz")).send().await.unwrap().status(), 503);
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));
}

/// Receivers and workers are often scraped under one job: the gauge says which a process is,
/// so that an alert on none being ready sees every receiver down beside a ready worker.
#[tokio::test]
async fn relay_ready_names_the_command_of_its_process() {
    let queue = TestQueue::new(Backend::Amqp, EventTypes::All).await;
    let polyai = FakePolyai::start().await;
    let env = queue.relay_env(&polyai.base_url, &[]);
    for command in ["work", "run"] {
        let mut relay = RelayProcess::spawn(&[command], &as_refs(&env)).await;
        relay.wait_ready().await;
        assert_eq!(
            relay_ready_gauge(&relay).await,
            format!(r#"relay_ready{{command="{command}"}} 1"#),
            "{}",
            relay.logs()
        );
        relay.terminate();
        assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));
    }
}
