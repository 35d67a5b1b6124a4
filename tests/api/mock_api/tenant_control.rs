//! The `/_mock/tenants` routes that flip one tenant's switches over HTTP, and the tenant sets
//! the mock refuses to start with.

use polyai_relay_devtools::mock_api::{EmitConfig, EmitScheme, Faults, MockApi, MockConfig, Tenant, PRIMARY_TENANT};
use secrecy::SecretString;
use serde_json::{json, Value};

use super::{
    assert_envelope, config, spawn_mock_with,
    tenants::{two, ACCOUNT_B, KEY_B, PROJECT_B},
    TestMock, KEY,
};

impl TestMock {
    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the mock answers")
    }
}

#[tokio::test]
async fn the_control_routes_revoke_restore_and_set_faults_for_one_tenant() {
    let mock = spawn_mock_with(two()).await;
    let (list_a, list_b) = (mock.v3(""), mock.v3_of(ACCOUNT_B, PROJECT_B, ""));
    let listed = mock.control(reqwest::Method::GET, "/_mock/tenants", None).await;
    assert_eq!(listed.status(), 200);
    let text = listed.text().await.unwrap();
    assert!(!text.contains(KEY) && !text.contains(KEY_B), "no key is shown: {text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["tenants"][0]["name"], PRIMARY_TENANT);
    assert_eq!(
        listed["tenants"][1],
        json!({
            "name": "b", "account_id": ACCOUNT_B, "project_id": PROJECT_B, "revoked": false,
            "faults": {"latency_ms": 0, "rate_429": 0.0, "retry_after_s": 1, "rate_5xx": 0.0, "not_found_until": 0},
        })
    );

    assert_eq!(mock.control(reqwest::Method::POST, "/_mock/tenants/b/revoke", None).await.status(), 204);
    assert_envelope(mock.get_with(&list_b, KEY_B).await, 401, "AUTH_USER_UNAUTHORISED").await;
    assert_eq!(mock.get(&list_a).await.status(), 200);
    let shown: Value = mock.control(reqwest::Method::GET, "/_mock/tenants/b", None).await.json().await.unwrap();
    assert_eq!(shown["revoked"], true);
    assert_eq!(mock.control(reqwest::Method::POST, "/_mock/tenants/b/restore", None).await.status(), 204);
    assert_eq!(mock.get_with(&list_b, KEY_B).await.status(), 200);

    let storm = json!({"rate_429": 1.0, "retry_after_s": 5});
    let set = mock.control(reqwest::Method::PUT, "/_mock/tenants/b/faults", Some(storm)).await;
    assert_eq!(set.status(), 200);
    assert_eq!(set.json::<Value>().await.unwrap()["faults"]["rate_429"], 1.0);
    let throttled = mock.get_with(&list_b, KEY_B).await;
    assert_eq!(throttled.headers()["retry-after"], "5");
    assert_envelope(throttled, 429, "RATE_LIMIT_EXCEEDED").await;
    assert_eq!(mock.get(&list_a).await.status(), 200, "the other tenant is not throttled");
    let cleared = mock.control(reqwest::Method::PUT, "/_mock/tenants/b/faults", Some(json!({}))).await;
    assert_eq!(cleared.status(), 200);
    assert_eq!(mock.get_with(&list_b, KEY_B).await.status(), 200);
}

#[tokio::test]
async fn the_control_routes_refuse_unknown_tenants_and_bad_faults() {
    let mock = spawn_mock_with(two()).await;
    for (method, path) in [
        (reqwest::Method::GET, "/_mock/tenants/nobody"),
        (reqwest::Method::POST, "/_mock/tenants/nobody/revoke"),
        (reqwest::Method::POST, "/_mock/tenants/nobody/restore"),
    ] {
        assert_envelope(mock.control(method, path, None).await, 404, "TENANT_NOT_FOUND").await;
    }
    let unknown = mock.control(reqwest::Method::PUT, "/_mock/tenants/nobody/faults", Some(json!({}))).await;
    assert_envelope(unknown, 404, "TENANT_NOT_FOUND").await;
    for body in
        [json!({"rate_429": 2}), json!({"rate_5xx": -0.5}), json!({"storm": true}), json!({"latency_ms": "slow"})]
    {
        let refused = mock.control(reqwest::Method::PUT, "/_mock/tenants/b/faults", Some(body.clone())).await;
        assert_envelope(refused, 400, "SCHEMA_VALIDATION_FAILED").await;
    }
    assert_eq!(mock.running.control().status("b").unwrap().faults.rate_429, 0.0, "nothing changed");
}

fn with(tenants: Vec<Tenant>) -> MockConfig {
    MockConfig { tenants, ..config() }
}

#[test]
fn tenant_sets_that_cannot_be_told_apart_are_refused_naming_tenants_not_keys() {
    let b = || Tenant::new("b", ACCOUNT_B, PROJECT_B, KEY_B);
    let with_platform = |mut t: Tenant, key: &str| {
        t.platform_api_key = Some(SecretString::from(key));
        t
    };
    let emit = EmitConfig {
        url: "ftp://127.0.0.1/hook".parse().unwrap(),
        rate: 1.0,
        count: None,
        secret: SecretString::from("whsec_x"),
        scheme: EmitScheme::Timestamped,
    };
    let cases = [
        (vec![b(), b()], "two tenants are named `b`"),
        (vec![Tenant::new(PRIMARY_TENANT, ACCOUNT_B, PROJECT_B, KEY_B)], "two tenants are named `default`"),
        (
            vec![Tenant::new("b", "ws-mock", "PROJECT-MOCK", KEY_B)],
            "tenants `default` and `b` both serve ws-mock/PROJECT-MOCK",
        ),
        (vec![Tenant::new("b", ACCOUNT_B, PROJECT_B, KEY)], "tenants `default` and `b` have the same v3 key"),
        (vec![with_platform(b(), KEY)], "share a platform key across accounts"),
        (vec![Tenant::new("B!", ACCOUNT_B, PROJECT_B, KEY_B)], "a tenant name may hold only"),
        (vec![Tenant::new("b", "ws b", PROJECT_B, KEY_B)], "tenant `b`: its account may hold only"),
        (vec![Tenant::new("b", ACCOUNT_B, "", KEY_B)], "tenant `b`: its project may hold only"),
        (vec![Tenant::new("b", ACCOUNT_B, PROJECT_B, " ")], "tenant `b`: its key is empty"),
        (vec![with_platform(b(), "")], "tenant `b`: its platform key is empty"),
        (vec![Tenant { faults: Some(Faults { rate_5xx: 1.5, ..Faults::default() }), ..b() }], "its rate_5xx must be"),
        (vec![Tenant { emit: Some(emit), ..b() }], "tenant `b`: MOCK_API_EMIT_TO must be an http(s) URL"),
    ];
    for (tenants, expected) in cases {
        let message = MockApi::new(with(tenants)).err().expect("refused").to_string();
        assert!(message.contains("MOCK_API_TENANTS") && message.contains(expected), "{message}");
        assert!(!message.contains(KEY) && !message.contains(KEY_B), "{message}");
    }
    // Two projects of one account may share the account's platform key.
    let shared = Tenant::new("c", "ws-mock", "PROJECT-C", "key-c");
    assert!(MockApi::new(with(vec![b(), with_platform(shared, KEY)])).is_ok());
}
