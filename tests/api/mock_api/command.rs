//! `polyai-relay mock-api` as a process: serves, keeps its key out of the logs, exits 0 on SIGTERM.

use std::time::Duration;

use crate::{
    helpers::http,
    process::{run_to_exit, run_to_exit_with_stdout, RelayProcess},
};

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
    let http = http();
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

#[tokio::test]
async fn the_mock_api_command_serves_each_tenant_on_its_own_paths_and_never_logs_a_key() {
    let (key, key_b, key_c) = ("cli-primary-key-8c0a", "cli-tenant-b-key-7f1e", "cli-tenant-c-key-22d9");
    let key_file = std::env::temp_dir().join(format!("mock-tenant-key-{}", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, format!("{key_c}\n")).unwrap();
    let spec_b = format!("name=b,account=ws-b,project=PROJECT-B,key={key_b}");
    let spec_c = format!("name=c,account=ws-c,project=PROJECT-C,key-file={}", key_file.display());
    let env = [
        ("MOCK_API_LISTEN", "127.0.0.1:0"),
        ("MOCK_API_CONVERSATIONS", "5"),
        ("MOCK_API_KEY", key),
        ("RUST_LOG", "debug"),
    ];
    let mut mock = RelayProcess::spawn(&["mock-api", "--tenant", &spec_b, "--tenant", &spec_c], &env).await;
    let http = http();
    let status = |path: &str, key: &str| {
        let request = http.get(mock.url(path)).header("x-api-key", key);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let (a, b, c) = (
        "/v3/ws-mock/PROJECT-MOCK/conversations",
        "/v3/ws-b/PROJECT-B/conversations",
        "/v3/ws-c/PROJECT-C/conversations",
    );
    assert_eq!((status(a, key).await, status(b, key_b).await, status(c, key_c).await), (200, 200, 200));
    assert_eq!((status(b, key).await, status(a, key_b).await, status(b, key_c).await), (403, 403, 403));

    let revoke = http.post(mock.url("/_mock/tenants/b/revoke")).send().await.unwrap();
    assert_eq!(revoke.status(), 204);
    assert_eq!((status(b, key_b).await, status(c, key_c).await), (401, 200));
    assert_eq!(http.post(mock.url("/_mock/tenants/b/restore")).send().await.unwrap().status(), 204);
    assert_eq!(status(b, key_b).await, 200);

    mock.terminate();
    assert_eq!(mock.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", mock.logs());
    std::fs::remove_file(key_file).unwrap();
    let logs = mock.logs();
    assert!(logs.contains("PROJECT-B") && logs.contains("PROJECT-C"), "each tenant is announced: {logs}");
    for key in [key, key_b, key_c] {
        assert!(!logs.contains(key), "no key reaches the logs");
    }
}

#[tokio::test]
async fn a_bad_tenant_stops_start_up_without_quoting_its_key() {
    let tenants =
        "name=b,account=ws-b,project=PROJECT-B,key=fine-key-1;name=c,account=ws-c,project=PROJECT-C,kee=leaky-key-4b1d";
    let (code, stderr) = run_to_exit(&["mock-api"], &[("MOCK_API_TENANTS", tenants)]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("MOCK_API_TENANTS: tenant 2: item 4"), "{stderr}");
    assert!(!stderr.contains("leaky-key-4b1d") && !stderr.contains("fine-key-1"), "{stderr}");

    let clash = "name=b,account=ws-b,project=PROJECT-B,key=mock-api-key";
    let (code, stderr) = run_to_exit(&["mock-api", "--tenant", clash], &[]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("tenants `default` and `b` have the same v3 key"), "{stderr}");
    assert!(!stderr.contains("mock-api-key"), "{stderr}");
}

#[tokio::test]
async fn the_help_documents_the_tenant_flag() {
    let (code, stdout, _) = run_to_exit_with_stdout(&["mock-api", "--help"], &[]).await;
    assert_eq!(code, Some(0));
    for text in ["--tenant", "MOCK_API_TENANTS", "name=NAME,account=ACCOUNT_ID", "/_mock/tenants"] {
        assert!(stdout.contains(text), "{text} in {stdout}");
    }
}
