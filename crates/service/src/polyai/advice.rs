//! What to do about each failure, after the troubleshooting table of PolyAI's quickstart.

use super::ApiError;

/// How the settings the advice points at are named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SettingNames {
    /// The one project's `POLYAI_*` variables.
    #[default]
    Variables,
    /// A project's fields in `RELAY_PROJECTS_FILE` (design §12).
    ProjectFields,
}

/// One sentence telling the operator how to fix `error`, naming the settings as `names` does.
pub fn advice_for(error: &ApiError, names: SettingNames) -> &'static str {
    if names == SettingNames::Variables {
        return advice(error);
    }
    match error {
        ApiError::Unauthorized { status: 401, .. } => {
            "the key was refused: check the project's api_key_file; v3 keys are project- and region-scoped, so a key of another region or project answers 401"
        }
        ApiError::Unauthorized { .. } => {
            "the key lacks permission for this project: ask your PolyAI representative for Conversations API access on its project_id"
        }
        ApiError::NotFound { .. } => {
            "wrong host family or ids: the project's region (or base_url) must name https://api.{us-1,uk-1,euw-1}.platform.polyai.app, and its account_id / project_id the workspace and agent ids"
        }
        ApiError::Rejected { status: 300..=399, .. } => {
            "the API answered with a redirect, which the relay does not follow (the key would go with it): if it points at PolyAI's https:// host, set the project's region or base_url (or platform_url) to that host"
        }
        _ => advice(error),
    }
}

/// One sentence telling the operator how to fix `error`.
pub fn advice(error: &ApiError) -> &'static str {
    match error {
        ApiError::Unauthorized { status: 401, .. } => {
            "the key was refused: check POLYAI_API_KEY; v3 keys are project- and region-scoped, so a key of another region or project answers 401"
        }
        ApiError::Unauthorized { .. } => {
            "the key lacks permission for this project: ask your PolyAI representative for Conversations API access on POLYAI_PROJECT_ID"
        }
        ApiError::NotFound { .. } => {
            "wrong host family or ids: POLYAI_BASE_URL must be https://api.{us-1,uk-1,euw-1}.platform.polyai.app, and POLYAI_ACCOUNT_ID / POLYAI_PROJECT_ID the workspace and agent ids"
        }
        ApiError::RateLimited { .. } => "rate limited: wait for Retry-After, or lower RELAY_API_RATE",
        ApiError::Server { .. } => "PolyAI answered with a server error: retry later; quote the correlation id to support",
        ApiError::Transport(_) => "the API could not be reached: check the host name, DNS, proxies and egress rules",
        ApiError::Rejected { status: 300..=399, .. } => {
            "the API answered with a redirect, which the relay does not follow (the key would go with it): if it points at PolyAI's https:// host, set POLYAI_BASE_URL (or POLYAI_PLATFORM_URL) to that host"
        }
        ApiError::Rejected { .. } => "the request was refused as invalid: check the ids and options",
        ApiError::Unusable { .. } => {
            "the answer cannot be used: raise RELAY_API_MAX_RESPONSE or RELAY_AUDIO_MAX if it is legitimate"
        }
    }
}
