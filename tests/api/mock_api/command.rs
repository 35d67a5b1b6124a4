//! `polyai-relay mock-api` as a process: serves, keeps its key out of the logs, exits 0 on SIGTERM.

use std::time::Duration;

use crate::process::{run_to_exit, RelayProcess};

#[tokio::test]
async fn the_mock_api_command_serves_and_exits_0_on_sigterm() {
    let key = "cli-key-never-logged-5d2a";
    let env = [
        ("MOCK_API_LISTEN", "127.0.0.1:0"),
        ("MOCK_API_CONVERSATIONS", "5"),
        ("MOCK_API_KEY", key),
        // The relay's own key in the same environment is not the mock's.
        ("POLYAI_API_KEY", "relay-key-not-the-mocks"),
        ("RUST_LOG", "debug"),
    ];
    let mut mock = RelayProcess::spawn(&["mock-api"], &env).await;
    let http = reqwest::Client::new();
    let url = mock.url("/v3/ws-mock/PROJECT-MOCK/conversations");
    let page: serde_json::Value = http.get(&url).header("x-api-key", key).send().await.unwrap().json().await.unwrap();
    assert!(page["conversations"].as_array().unwrap().len() <= 5);
    assert_eq!(http.get(&url).header("x-api-key", "wrong").send().await.unwrap().status(), 401);
    let relay_key = http.get(&url).header("x-api-key", "relay-key-not-the-mocks").send().await.unwrap();
    assert_eq!(relay_key.status(), 401);

    mock.terminate();
    assert_eq!(mock.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", mock.logs());
    assert!(!mock.logs().contains(key), "the key never reaches the logs");
}

#[tokio::test]
async fn bad_mock_settings_stop_start_up_naming_the_variable() {
    let (code, stderr) = run_to_exit(&["mock-api"], &[("MOCK_API_RATE_429", "2")]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("MOCK_API_RATE_429"), "{stderr}");

    let (code, stderr) = run_to_exit(&["mock-api"], &[("MOCK_API_EMIT_TO", "http://127.0.0.1:9/hook")]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("MOCK_API_EMIT_SECRET"), "{stderr}");
}
