//! What every handler shares: the settings, the generated conversations, and the little that changes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::{config::MockConfig, endpoints::Endpoints, error::Failure, generate::Conversation};

pub struct MockState {
    pub config: MockConfig,
    /// Newest first: the list order.
    pub conversations: Arc<[Conversation]>,
    /// Id → position in `conversations`, for the by-id routes.
    index: HashMap<String, usize>,
    /// By-id requests seen per conversation, for `not_found_until`.
    fetches: Mutex<HashMap<String, u32>>,
    pub endpoints: Mutex<Endpoints>,
}

impl MockState {
    pub fn new(config: MockConfig, conversations: Vec<Conversation>) -> Self {
        let index = conversations.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
        Self {
            config,
            conversations: conversations.into(),
            index,
            fetches: Mutex::default(),
            endpoints: Mutex::default(),
        }
    }

    /// The path's account and project (agent) must be the mock's, as a project-scoped key would insist.
    pub fn check_project(&self, account: Option<&str>, project: &str) -> Result<(), Failure> {
        let account_ok = account.is_none_or(|a| a == self.config.account_id);
        if account_ok && project == self.config.project_id {
            return Ok(());
        }
        Err(Failure::ProjectNotFound(format!(
            "{}{project} (the mock serves {}/{})",
            account.map(|a| format!("{a}/")).unwrap_or_default(),
            self.config.account_id,
            self.config.project_id
        )))
    }

    pub fn conversation(&self, id: &str) -> Option<&Conversation> {
        self.index.get(id).map(|i| &self.conversations[*i])
    }

    /// Counts a by-id request; true while the conversation should still look "not ingested yet".
    pub fn not_ingested_yet(&self, id: &str) -> bool {
        let limit = self.config.faults.not_found_until;
        if limit == 0 {
            return false;
        }
        let mut fetches = lock(&self.fetches);
        let seen = fetches.entry(id.to_owned()).or_insert(0);
        *seen = seen.saturating_add(1);
        *seen <= limit
    }

    pub fn endpoints(&self) -> MutexGuard<'_, Endpoints> {
        lock(&self.endpoints)
    }
}

/// A panic while holding one of these locks leaves plain data behind, still fine to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
