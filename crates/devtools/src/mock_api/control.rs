//! Switches flipped while the mock serves, one tenant at a time: revoke and restore its keys,
//! change its faults. Tests hold a [`MockControl`]; a shell uses the `/_mock/tenants` routes.

use std::sync::Arc;

use super::{config::Faults, state::MockState, tenant_state::TenantState};

/// A handle on a mock's tenants; cheap to clone, valid as long as the mock is.
#[derive(Clone)]
pub struct MockControl {
    /// The serving mock's state, whose tenants hold the switches.
    state: Arc<MockState>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("no tenant named `{0}`")]
    UnknownTenant(String),
    #[error("{0} must be a fraction from 0 to 1")]
    NotAFraction(&'static str),
}

/// A tenant as the control handle shows it: never its keys.
#[derive(Debug, Clone)]
pub struct TenantStatus {
    /// What `revoke`, `restore` and `set_faults` take.
    pub name: String,
    /// Its path's account, to tell tenants apart in a listing.
    pub account_id: String,
    /// Its path's project.
    pub project_id: String,
    /// True while its keys are refused.
    pub revoked: bool,
    /// The faults its requests meet now.
    pub faults: Faults,
}

impl MockControl {
    pub(super) fn new(state: Arc<MockState>) -> Self {
        Self { state }
    }

    /// Refuses the tenant's v3 and platform keys with 401 from the next request on, as PolyAI
    /// refuses a revoked key. Other tenants are untouched, and a platform key another tenant of
    /// the account also holds still opens that account.
    pub fn revoke(&self, tenant: &str) -> Result<(), ControlError> {
        self.tenant(tenant)?.set_revoked(true);
        tracing::info!(tenant, "keys revoked");
        Ok(())
    }

    /// Accepts the tenant's keys again.
    pub fn restore(&self, tenant: &str) -> Result<(), ControlError> {
        self.tenant(tenant)?.set_revoked(false);
        tracing::info!(tenant, "keys restored");
        Ok(())
    }

    /// Replaces the tenant's faults from the next request on; `Faults::default()` clears them.
    pub fn set_faults(&self, tenant: &str, faults: Faults) -> Result<(), ControlError> {
        let state = self.tenant(tenant)?;
        faults.check().map_err(ControlError::NotAFraction)?;
        tracing::info!(
            tenant,
            latency_ms = faults.latency.as_millis() as u64,
            rate_429 = faults.rate_429,
            rate_5xx = faults.rate_5xx,
            not_found_until = faults.not_found_until,
            "faults set"
        );
        state.set_faults(faults);
        Ok(())
    }

    /// Every tenant, the primary one first.
    pub fn tenants(&self) -> Vec<TenantStatus> {
        self.state.tenants.iter().map(|t| status(t)).collect()
    }

    pub fn status(&self, tenant: &str) -> Result<TenantStatus, ControlError> {
        self.tenant(tenant).map(|t| status(t))
    }

    fn tenant(&self, name: &str) -> Result<&Arc<TenantState>, ControlError> {
        self.state.tenant(name).ok_or_else(|| ControlError::UnknownTenant(name.to_owned()))
    }
}

fn status(tenant: &TenantState) -> TenantStatus {
    let switches = tenant.switches();
    TenantStatus {
        name: tenant.name.clone(),
        account_id: tenant.account_id.clone(),
        project_id: tenant.project_id.clone(),
        revoked: switches.revoked,
        faults: switches.faults,
    }
}
