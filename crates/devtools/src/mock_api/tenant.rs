//! The accounts and projects one mock serves, each with keys of its own, and the rules that
//! keep them apart: a key names one tenant, a path names one tenant, and no two are the same.

use std::collections::HashMap;

use polyai_relay::config::{ConfigError, ProjectName};
use secrecy::{ExposeSecret, SecretString};

use super::config::{EmitConfig, Faults, MockConfig};

/// One more account and project the mock serves beside the primary one (design §12).
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Names the tenant in `MockControl`, `/_mock/tenants/{name}` and logs; `[a-z0-9-]+`.
    pub name: String,
    /// The workspace (`ws-…`) of `/v3/{account}/...`; tenants may share one.
    pub account_id: String,
    /// The project (= agent id of `/v1/agents/{agentId}`); unique within its account.
    pub project_id: String,
    /// `x-api-key` of this project's `/v3/...` routes, and of no other project's.
    pub api_key: SecretString,
    /// The account's `/v1/...` key (workspace-scoped, like PolyAI's). `None`: `api_key`.
    pub platform_api_key: Option<SecretString>,
    /// This tenant's faults at start. `None`: the mock-wide `MockConfig::faults`.
    pub faults: Option<Faults>,
    /// `Some`: signed webhooks about this tenant's conversations, with its own secret and URL.
    pub emit: Option<EmitConfig>,
}

impl Tenant {
    /// A tenant with the mock-wide faults, its v3 key as its platform key, and no webhooks.
    pub fn new(name: &str, account_id: &str, project_id: &str, api_key: &str) -> Self {
        Self {
            name: name.to_owned(),
            account_id: account_id.to_owned(),
            project_id: project_id.to_owned(),
            api_key: SecretString::from(api_key),
            platform_api_key: None,
            faults: None,
            emit: None,
        }
    }

    /// The key of the `/v1/...` routes.
    pub fn platform_key(&self) -> &SecretString {
        self.platform_api_key.as_ref().unwrap_or(&self.api_key)
    }
}

/// The variable of the `mock-api` command the extra tenants come from, named by every error.
const VARIABLE: &str = "MOCK_API_TENANTS";

/// True for a tenant name: the relay's project-name rule, so one name fits both sides of a demo.
/// Its error is dropped: it quotes the text, which in a `--tenant` spec may be a mistyped key.
pub fn valid_name(name: &str) -> bool {
    ProjectName::parse("tenant", name).is_ok()
}

/// Checks the extra tenants against each other and the primary one. Errors name tenants,
/// never a key.
pub fn validate(config: &MockConfig) -> Result<(), ConfigError> {
    let all = config.all_tenants();
    for tenant in &config.tenants {
        validate_one(tenant)?;
    }
    let mut names = HashMap::new();
    let mut projects = HashMap::new();
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut platform_accounts: Vec<(&str, &str, &str)> = Vec::new();
    for tenant in &all {
        let name = tenant.name.as_str();
        if let Some(first) = names.insert(name, name) {
            return Err(error(format!("two tenants are named `{first}`; each needs a name of its own")));
        }
        if let Some(first) = projects.insert((tenant.account_id.as_str(), tenant.project_id.as_str()), name) {
            return Err(error(format!(
                "tenants `{first}` and `{name}` both serve {}/{}",
                tenant.account_id, tenant.project_id
            )));
        }
        let key = tenant.api_key.expose_secret();
        if let Some((first, _)) = keys.iter().find(|(_, other)| *other == key) {
            return Err(error(format!(
                "tenants `{first}` and `{name}` have the same v3 key; each project's is its own"
            )));
        }
        keys.push((name, key));
        let platform = tenant.platform_key().expose_secret();
        let clash =
            platform_accounts.iter().find(|(_, other, account)| *other == platform && *account != tenant.account_id);
        if let Some((first, _, _)) = clash {
            return Err(error(format!(
                "tenants `{first}` and `{name}` share a platform key across accounts; it is workspace-scoped"
            )));
        }
        platform_accounts.push((name, platform, &tenant.account_id));
    }
    Ok(())
}

fn validate_one(tenant: &Tenant) -> Result<(), ConfigError> {
    if !valid_name(&tenant.name) {
        return Err(error("a tenant name may hold only a-z, 0-9 and `-` (1 to 63 of them)".to_owned()));
    }
    let name = &tenant.name;
    for (field, id) in [("account", &tenant.account_id), ("project", &tenant.project_id)] {
        if !valid_id(id) {
            return Err(error(format!("tenant `{name}`: its {field} may hold only letters, digits, `-`, `_` and `.`")));
        }
    }
    for (field, key) in [("key", Some(&tenant.api_key)), ("platform key", tenant.platform_api_key.as_ref())] {
        if key.is_some_and(|key| key.expose_secret().trim().is_empty()) {
            return Err(error(format!("tenant `{name}`: its {field} is empty")));
        }
    }
    if let Some(field) = tenant.faults.as_ref().and_then(|faults| faults.check().err()) {
        return Err(error(format!("tenant `{name}`: its {field} must be a fraction from 0 to 1")));
    }
    if let Some(emit) = &tenant.emit {
        emit.validate().map_err(|e| error(format!("tenant `{name}`: {e}")))?;
    }
    Ok(())
}

/// The rule for account and project ids, which appear in paths.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn error(message: String) -> ConfigError {
    ConfigError::new(VARIABLE, format!("{VARIABLE}: {message}"))
}
