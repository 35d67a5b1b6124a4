//! One tenant while serving: its conversations, its keys, and the switches tests and demos flip
//! at runtime (a revoked key, a 429 storm) without touching any other tenant.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use secrecy::{ExposeSecret, SecretString};

use super::{config::Faults, endpoints::Endpoints, generate::Conversation, tenant::Tenant};

pub struct TenantState {
    /// The tenant's name, for the control handle, the admin routes and logs.
    pub name: String,
    /// The account of its `/v3/{account}/...` paths; its platform key is scoped to it.
    pub account_id: String,
    /// The project of its paths (the agent id of `/v1/agents/{agentId}`).
    pub project_id: String,
    /// Accepted on this tenant's `/v3/...` paths only.
    api_key: SecretString,
    /// Accepted on the `/v1/...` routes of this tenant's account.
    platform_key: SecretString,
    /// Newest first: the list order.
    pub conversations: Arc<[Conversation]>,
    /// Id → position in `conversations`, for the by-id routes.
    index: HashMap<String, usize>,
    /// By-id requests seen per conversation, for `not_found_until`.
    fetches: Mutex<HashMap<String, u32>>,
    /// What can change while serving; read once per request, so a flip applies to the next one.
    switches: Mutex<Switches>,
    /// The account's webhook endpoints: PolyAI registers them per account, so the tenants of
    /// one account share this store.
    pub endpoints: Arc<Mutex<Endpoints>>,
}

/// A tenant's runtime settings.
#[derive(Debug, Clone)]
pub struct Switches {
    /// While true both of the tenant's keys are refused with 401, as a revoked key is.
    pub revoked: bool,
    /// The faults its requests meet now.
    pub faults: Faults,
}

impl TenantState {
    /// `default_faults` applies when the tenant has none of its own; `endpoints` is its account's.
    pub fn new(
        tenant: &Tenant,
        default_faults: &Faults,
        conversations: Vec<Conversation>,
        endpoints: Arc<Mutex<Endpoints>>,
    ) -> Self {
        let index = conversations.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
        let faults = tenant.faults.clone().unwrap_or_else(|| default_faults.clone());
        Self {
            name: tenant.name.clone(),
            account_id: tenant.account_id.clone(),
            project_id: tenant.project_id.clone(),
            api_key: tenant.api_key.clone(),
            platform_key: tenant.platform_key().clone(),
            conversations: conversations.into(),
            index,
            fetches: Mutex::default(),
            switches: Mutex::new(Switches { revoked: false, faults }),
            endpoints,
        }
    }

    pub fn conversation(&self, id: &str) -> Option<&Conversation> {
        self.index.get(id).map(|i| &self.conversations[*i])
    }

    /// Counts a by-id request; true while the conversation should still look "not ingested yet".
    pub fn not_ingested_yet(&self, id: &str) -> bool {
        let limit = self.switches().faults.not_found_until;
        if limit == 0 {
            return false;
        }
        let mut fetches = lock(&self.fetches);
        let seen = fetches.entry(id.to_owned()).or_insert(0);
        *seen = seen.saturating_add(1);
        *seen <= limit
    }

    /// A copy of the switches as they are now.
    pub fn switches(&self) -> Switches {
        lock(&self.switches).clone()
    }

    pub fn set_revoked(&self, revoked: bool) {
        lock(&self.switches).revoked = revoked;
    }

    pub fn set_faults(&self, faults: Faults) {
        lock(&self.switches).faults = faults;
    }

    /// True when `given` is this tenant's v3 key and it is not revoked.
    pub fn accepts_v3_key(&self, given: &[u8]) -> bool {
        same_key(given, &self.api_key) && !self.switches().revoked
    }

    /// True when `given` is this tenant's platform key and it is not revoked.
    pub fn accepts_platform_key(&self, given: &[u8]) -> bool {
        same_key(given, &self.platform_key) && !self.switches().revoked
    }
}

/// Compares without stopping at the first difference, as a real key check must; cheap here too.
fn same_key(given: &[u8], expected: &SecretString) -> bool {
    let expected = expected.expose_secret().as_bytes();
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// A panic while holding one of these locks leaves plain data behind, still fine to use.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
