//! What every handler shares: the settings, the tenants, and each account's webhook endpoints;
//! and which tenant a request's key and path name, decided the way a scoped key would be.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    config::MockConfig,
    endpoints::Endpoints,
    error::Failure,
    tenant_state::{lock, TenantState},
};

pub struct MockState {
    /// As started; the tenants' runtime switches live in `tenants`.
    pub config: MockConfig,
    /// The primary tenant first, then `config.tenants` in order.
    pub tenants: Vec<Arc<TenantState>>,
}

impl MockState {
    /// `tenants` must be non-empty, the primary one first.
    pub fn new(config: MockConfig, tenants: Vec<Arc<TenantState>>) -> Self {
        Self { config, tenants }
    }

    pub fn primary(&self) -> &Arc<TenantState> {
        &self.tenants[0]
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<TenantState>> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The tenant `/v3/{account}/{project}/...` with `key` may see: the key's own, and only on its own path.
    pub fn v3_tenant(&self, key: Option<&[u8]>, account: &str, project: &str) -> Result<&Arc<TenantState>, Failure> {
        let caller = key.and_then(|key| self.tenants.iter().find(|t| t.accepts_v3_key(key)));
        let caller = caller.ok_or(Failure::Unauthorised)?;
        let target = self
            .tenants
            .iter()
            .find(|t| t.account_id == account && t.project_id == project)
            .ok_or_else(|| self.project_not_found(&format!("{account}/{project}")))?;
        if !Arc::ptr_eq(caller, target) {
            return Err(Failure::Forbidden(format!("{account}/{project}")));
        }
        Ok(target)
    }

    /// The account whose workspace-scoped platform key `key` is.
    pub fn platform_account(&self, key: Option<&[u8]>) -> Result<Account, Failure> {
        let holder = key.and_then(|key| self.tenants.iter().find(|t| t.accepts_platform_key(key)));
        let holder = holder.ok_or(Failure::Unauthorised)?;
        Ok(Account { id: holder.account_id.clone(), endpoints: holder.endpoints.clone() })
    }

    /// The tenant `/v1/agents/{agent}/...` with `key` may see: any project of the key's account.
    pub fn agent_tenant(&self, key: Option<&[u8]>, agent: &str) -> Result<&Arc<TenantState>, Failure> {
        let account = self.platform_account(key)?.id;
        let mut same_project = self.tenants.iter().filter(|t| t.project_id == agent).peekable();
        if same_project.peek().is_none() {
            return Err(self.project_not_found(agent));
        }
        same_project.find(|t| t.account_id == account).ok_or_else(|| Failure::Forbidden(agent.to_owned()))
    }

    fn project_not_found(&self, asked: &str) -> Failure {
        let served: Vec<String> = self.tenants.iter().map(|t| format!("{}/{}", t.account_id, t.project_id)).collect();
        Failure::ProjectNotFound(format!("{asked} (the mock serves {})", served.join(", ")))
    }
}

/// The account a platform key named, for the account-wide `/v1/...` handlers.
#[derive(Clone)]
pub struct Account {
    /// For logs.
    pub id: String,
    /// The account's webhook endpoints, shared with its tenants.
    endpoints: Arc<Mutex<Endpoints>>,
}

impl Account {
    pub fn endpoints(&self) -> MutexGuard<'_, Endpoints> {
        lock(&self.endpoints)
    }
}
