//! Several accounts and projects in one mock: each key opens its own project only, each project
//! has its own conversations, and faults or a revoked key hit one tenant alone.

use std::{collections::HashSet, time::Duration};

use polyai_relay::polyai::ApiError;
use polyai_relay_devtools::mock_api::{
    ControlError, Faults, MockConfig, Tenant, DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID, PRIMARY_TENANT,
};
use reqwest::Response;
use secrecy::SecretString;

use super::{assert_envelope, config, spawn_mock, spawn_mock_with, TestMock, KEY};

pub const KEY_B: &str = "tenant-b-key-93fd";
pub const ACCOUNT_B: &str = "ws-b";
pub const PROJECT_B: &str = "PROJECT-B";
/// A second project in the primary tenant's account.
const KEY_C: &str = "tenant-c-key-1e07";
const PROJECT_C: &str = "PROJECT-C";

/// The primary tenant plus `b`, in an account of its own.
pub fn two() -> MockConfig {
    MockConfig { tenants: vec![Tenant::new("b", ACCOUNT_B, PROJECT_B, KEY_B)], ..config() }
}

/// `two()` plus `c`, a second project of the primary tenant's account.
fn three() -> MockConfig {
    let mut config = two();
    config.tenants.push(Tenant::new("c", DEFAULT_ACCOUNT_ID, PROJECT_C, KEY_C));
    config
}

impl TestMock {
    /// `/v3/{account}/{project}/conversations{rest}`.
    pub fn v3_of(&self, account: &str, project: &str, rest: &str) -> String {
        self.url(&format!("/v3/{account}/{project}/conversations{rest}"))
    }

    /// The list, a by-id and an audio URL of a finished call of `tenant`'s.
    fn tenant_urls(&self, tenant: &str, account: &str, project: &str) -> [String; 3] {
        let call = self.running.conversations_of(tenant).unwrap().iter().find(|c| c.has_recording()).unwrap();
        let id = &call.id;
        [
            self.v3_of(account, project, ""),
            self.v3_of(account, project, &format!("/{id}")),
            self.v3_of(account, project, &format!("/{id}/audio")),
        ]
    }
}

/// Asserts a refusal that does not quote any key.
async fn assert_refused(response: Response, status: u16, code: &str) {
    let body = assert_envelope(response, status, code).await.to_string();
    for key in [KEY, KEY_B, KEY_C] {
        assert!(!body.contains(key), "{body}");
    }
}

#[tokio::test]
async fn each_v3_key_opens_its_own_projects_paths_only() {
    let mock = spawn_mock_with(two()).await;
    let own_a = mock.tenant_urls(PRIMARY_TENANT, DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID);
    let own_b = mock.tenant_urls("b", ACCOUNT_B, PROJECT_B);
    for (key, own, other) in [(KEY, &own_a, &own_b), (KEY_B, &own_b, &own_a)] {
        for url in own {
            assert_eq!(mock.get_with(url, key).await.status(), 200, "{url}");
        }
        for url in other {
            assert_refused(mock.get_with(url, key).await, 403, "USER_ACCESS_FORBIDDEN").await;
        }
        // A project no tenant has is still not found, whoever asks; a key no tenant has is refused.
        for path in [format!("{ACCOUNT_B}/PROJECT-OTHER"), format!("ws-other/{PROJECT_B}")] {
            let unknown = mock.url(&format!("/v3/{path}/conversations"));
            assert_refused(mock.get_with(&unknown, key).await, 404, "PROJECT_NOT_FOUND").await;
        }
    }
    for url in own_b.iter().chain(&own_a) {
        assert_refused(mock.get_with(url, "no-tenants-key").await, 401, "AUTH_USER_UNAUTHORISED").await;
        assert_refused(mock.http.get(url).send().await.unwrap(), 401, "AUTH_USER_UNAUTHORISED").await;
    }

    // The relay's client reads a key on another project's path as a refused key.
    let b = &mock.running.conversations_of("b").unwrap()[0].id;
    assert!(mock.relay_client_for(KEY_B, ACCOUNT_B, PROJECT_B).conversation(b).await.is_ok());
    let crossed = mock.relay_client_for(KEY, ACCOUNT_B, PROJECT_B).conversation(b).await;
    assert!(matches!(crossed, Err(ApiError::Unauthorized { status: 403, .. })), "{crossed:?}");
}

#[tokio::test]
async fn platform_keys_open_their_own_accounts_agents_and_webhook_endpoints() {
    let mock = spawn_mock_with(three()).await;
    let a = mock.running.conversations()[0].id.clone();
    let b = mock.running.conversations_of("b").unwrap()[0].id.clone();
    let agent = |project: &str, id: &str| mock.url(&format!("/v1/agents/{project}/conversations/{id}"));
    assert_eq!(mock.get_with(&agent(PROJECT_B, &b), KEY_B).await.status(), 200);
    assert_refused(mock.get_with(&agent(DEFAULT_PROJECT_ID, &a), KEY_B).await, 403, "USER_ACCESS_FORBIDDEN").await;
    assert_refused(mock.get_with(&agent(PROJECT_B, &b), KEY).await, 403, "USER_ACCESS_FORBIDDEN").await;
    // A platform key is workspace-scoped: another project of the account opens the primary's agent.
    assert_eq!(mock.get_with(&agent(DEFAULT_PROJECT_ID, &a), KEY_C).await.status(), 200);
    assert_refused(mock.get_with(&agent("PROJECT-OTHER", &a), KEY).await, 404, "PROJECT_NOT_FOUND").await;
    // But a v3 key is project-scoped, even within the account.
    let primary_list = mock.v3_of(DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID, "");
    assert_refused(mock.get_with(&primary_list, KEY_C).await, 403, "USER_ACCESS_FORBIDDEN").await;

    // Webhook endpoints belong to the account the key names.
    let body =
        serde_json::json!({"name": "a", "url": "https://example.com/hook", "event_types": ["conversation.completed"]});
    let endpoints = mock.url("/v1/webhook-endpoints");
    let created = mock.http.post(&endpoints).header("x-api-key", KEY).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let listed = |key: &'static str| {
        let request = mock.http.get(&endpoints).header("x-api-key", key);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["data"].clone() }
    };
    assert_eq!(listed(KEY_C).await[0]["id"], id.as_str(), "the account's other project sees it");
    assert_eq!(listed(KEY_B).await, serde_json::json!([]), "another account does not");
    let shown = mock.get_with(&mock.url(&format!("/v1/webhook-endpoints/{id}")), KEY_B).await;
    assert_refused(shown, 404, "WEBHOOK_ENDPOINT_NOT_FOUND").await;
}

#[tokio::test]
async fn each_tenant_has_conversations_of_its_own() {
    let mock = spawn_mock_with(two()).await;
    let (a, b) = (mock.running.conversations(), mock.running.conversations_of("b").unwrap());
    assert_eq!(a.len(), b.len());
    let ids_a: HashSet<&str> = a.iter().map(|c| c.id.as_str()).collect();
    assert!(b.iter().all(|c| !ids_a.contains(c.id.as_str())), "no id is shared");
    assert!(b.iter().all(|c| c.account_id == ACCOUNT_B && c.project_id == PROJECT_B));
    let page: serde_json::Value =
        mock.get_with(&mock.v3_of(ACCOUNT_B, PROJECT_B, "?limit=3"), KEY_B).await.json().await.unwrap();
    assert_eq!(page["conversations"][0]["project_id"], PROJECT_B);

    // One project's conversation is not found under the other's path.
    let a_path = mock.v3_of(DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID, &format!("/{}", b[0].id));
    assert_refused(mock.get_with(&a_path, KEY).await, 404, "CONVERSATIONS_NOT_FOUND").await;
    let b_path = mock.v3_of(ACCOUNT_B, PROJECT_B, &format!("/{}/audio", a[0].id));
    assert_refused(mock.get_with(&b_path, KEY_B).await, 404, "CONVERSATIONS_RECORDING_NOT_FOUND").await;

    // The same settings serve the same data, and the primary tenant's is a one-tenant mock's.
    let again = spawn_mock_with(two()).await;
    assert_eq!(again.running.conversations_of("b").unwrap(), b);
    assert_eq!(spawn_mock().await.running.conversations(), a);
    assert!(mock.running.conversations_of("nobody").is_none());
}

#[tokio::test]
async fn faults_of_one_tenant_hit_that_tenant_only() {
    let storm = Faults { rate_429: 1.0, retry_after: Duration::from_secs(2), ..Faults::default() };
    let mut config = two();
    config.tenants[0].faults = Some(storm);
    let mock = spawn_mock_with(config).await;
    let own_a = mock.tenant_urls(PRIMARY_TENANT, DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID);
    let own_b = mock.tenant_urls("b", ACCOUNT_B, PROJECT_B);
    let b_agent = mock
        .url(&format!("/v1/agents/{PROJECT_B}/conversations/{}", mock.running.conversations_of("b").unwrap()[0].id));
    for url in own_b.iter().chain([&b_agent]) {
        let response = mock.get_with(url, KEY_B).await;
        assert_eq!(response.headers()["retry-after"], "2");
        assert_refused(response, 429, "RATE_LIMIT_EXCEEDED").await;
    }
    for url in &own_a {
        assert_eq!(mock.get_with(url, KEY).await.status(), 200, "{url}");
    }

    // At runtime: 503s on the primary tenant, B's storm over.
    let control = mock.running.control();
    control.set_faults(PRIMARY_TENANT, Faults { rate_5xx: 1.0, ..Faults::default() }).unwrap();
    control.set_faults("b", Faults::default()).unwrap();
    for url in &own_a {
        assert_refused(mock.get_with(url, KEY).await, 503, "SERVICE_UNAVAILABLE").await;
    }
    for url in &own_b {
        assert_eq!(mock.get_with(url, KEY_B).await.status(), 200, "{url}");
    }

    // "Not ingested yet" counts per tenant too.
    control.set_faults(PRIMARY_TENANT, Faults::default()).unwrap();
    control.set_faults("b", Faults { not_found_until: 1, ..Faults::default() }).unwrap();
    let fresh_b = &mock.running.conversations_of("b").unwrap()[5].id;
    let fresh_b = mock.v3_of(ACCOUNT_B, PROJECT_B, &format!("/{fresh_b}"));
    assert_refused(mock.get_with(&fresh_b, KEY_B).await, 404, "CONVERSATIONS_NOT_FOUND").await;
    assert_eq!(mock.get_with(&fresh_b, KEY_B).await.status(), 200);
    let fresh_a = mock.v3(&format!("/{}", mock.running.conversations()[5].id));
    assert_eq!(mock.get_with(&fresh_a, KEY).await.status(), 200);

    assert_eq!(control.set_faults("nobody", Faults::default()), Err(ControlError::UnknownTenant("nobody".into())));
    let bad = Faults { rate_429: 2.0, ..Faults::default() };
    assert_eq!(control.set_faults("b", bad), Err(ControlError::NotAFraction("rate_429")));
    assert_eq!(control.status("b").unwrap().faults.not_found_until, 1, "a refused change changes nothing");
}

#[tokio::test]
async fn a_revoked_key_is_refused_until_restored_and_other_tenants_never_notice() {
    let mut config = three();
    // `c` also holds the primary tenant's key as its platform key: the account's key outlives one revocation.
    config.tenants[1].platform_api_key = Some(SecretString::from(KEY));
    let mock = spawn_mock_with(config).await;
    let control = mock.running.control();
    let own_a = mock.tenant_urls(PRIMARY_TENANT, DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID);
    let own_b = mock.tenant_urls("b", ACCOUNT_B, PROJECT_B);
    let b_agent = mock
        .url(&format!("/v1/agents/{PROJECT_B}/conversations/{}", mock.running.conversations_of("b").unwrap()[0].id));
    let endpoints = mock.url("/v1/webhook-endpoints");
    let client_b = mock.relay_client_for(KEY_B, ACCOUNT_B, PROJECT_B);

    control.revoke("b").unwrap();
    assert!(control.status("b").unwrap().revoked);
    for url in own_b.iter().chain([&b_agent, &endpoints]) {
        assert_refused(mock.get_with(url, KEY_B).await, 401, "AUTH_USER_UNAUTHORISED").await;
    }
    assert!(matches!(client_b.probe().await, Err(ApiError::Unauthorized { status: 401, .. })));
    for url in own_a.iter().chain([&endpoints]) {
        assert_eq!(mock.get_with(url, KEY).await.status(), 200, "{url}");
    }

    control.restore("b").unwrap();
    for url in own_b.iter().chain([&b_agent, &endpoints]) {
        assert_eq!(mock.get_with(url, KEY_B).await.status(), 200, "{url}");
    }
    assert!(client_b.probe().await.is_ok());

    // Revoking the primary tenant refuses its v3 key; `c` still holds it as the account's platform key.
    control.revoke(PRIMARY_TENANT).unwrap();
    assert_refused(mock.get_with(&own_a[0], KEY).await, 401, "AUTH_USER_UNAUTHORISED").await;
    assert_eq!(mock.get_with(&endpoints, KEY).await.status(), 200);
    assert_eq!(control.revoke("nobody"), Err(ControlError::UnknownTenant("nobody".into())));
    assert_eq!(control.restore("nobody"), Err(ControlError::UnknownTenant("nobody".into())));
}
