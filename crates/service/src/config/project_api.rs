//! The API settings of the projects of `RELAY_PROJECTS_FILE` (design §12): each project's own
//! key, ids and hosts, with the relay's timeout, answer cap and conversation path. Beside the
//! file, the one-project `POLYAI_*` variables are refused rather than silently ignored.

use super::{
    api_args::{ApiArgs, ConversationApi, PlatformArgs},
    projects_file::refuse_beside_file,
    ApiSettings, ConfigError, PlatformSettings, ProjectEntry, ProjectsFile,
};

impl ApiArgs {
    /// The API settings of every project the relay serves: the file's, in its order, or the one
    /// the environment describes.
    pub fn projects(&self, file: Option<&ProjectsFile>) -> Result<Vec<ApiSettings>, ConfigError> {
        self.chosen(file.map(|file| file.projects.as_slice()))
    }

    /// The API settings of `entries` (projects of the file), or of the environment's one project
    /// when `None`.
    pub fn chosen(&self, entries: Option<&[ProjectEntry]>) -> Result<Vec<ApiSettings>, ConfigError> {
        match entries {
            None => Ok(vec![self.settings()?]),
            Some(entries) => {
                self.refuse_env_project()?;
                entries.iter().map(|entry| self.project(entry)).collect()
            }
        }
    }

    /// The API settings of one project of the file.
    pub fn project(&self, entry: &ProjectEntry) -> Result<ApiSettings, ConfigError> {
        let why = "to fetch conversations";
        let api_key = entry.require_key("api_key_file", entry.api_key_file.as_deref(), why)?;
        let base_url = entry.require("region", entry.runtime_url.as_ref(), "(or base_url) to fetch conversations")?;
        let platform = self.platform.project(entry, why)?;
        if self.conversation_api == ConversationApi::Agents && platform.is_none() {
            return Err(entry.error("platform_url", "(or region) is required by RELAY_CONVERSATION_API=agents"));
        }
        Ok(ApiSettings {
            project: entry.name.clone(),
            base_url: base_url.clone(),
            api_key,
            account_id: entry.require("account_id", entry.account_id.as_ref(), why)?.clone(),
            project_id: entry.require("project_id", entry.project_id.as_ref(), why)?.clone(),
            timeout: self.platform.api_timeout,
            conversation_api: self.conversation_api,
            platform,
            max_response: self.api_max_response,
        })
    }

    /// With a projects file, each project names its own key, ids and hosts.
    pub fn refuse_env_project(&self) -> Result<(), ConfigError> {
        self.platform.refuse_env_project()?;
        refuse_beside_file(&[
            ("POLYAI_BASE_URL", self.base_url.is_some()),
            ("POLYAI_ACCOUNT_ID", self.account_id.is_some()),
            ("POLYAI_PROJECT_ID", self.project_id.is_some()),
        ])
    }
}

impl PlatformArgs {
    /// A project's Webhooks/Agents host and key (`platform_api_key_file`, else its API key), or
    /// `None` when it names neither `platform_url` nor a region. `why` ends the error of a
    /// missing key.
    pub fn project(&self, entry: &ProjectEntry, why: &str) -> Result<Option<PlatformSettings>, ConfigError> {
        let Some(url) = &entry.platform_url else { return Ok(None) };
        let api_key = match (&entry.platform_api_key_file, &entry.api_key_file) {
            (Some(path), _) => entry.require_key("platform_api_key_file", Some(path), why)?,
            (None, Some(path)) => entry.require_key("api_key_file", Some(path), why)?,
            (None, None) => {
                return Err(entry.error("platform_api_key_file", &format!("(or api_key_file) is required {why}")))
            }
        };
        Ok(Some(PlatformSettings { url: url.clone(), api_key, timeout: self.api_timeout }))
    }

    /// The Webhooks/Agents host and key of the one project a command works on: the
    /// environment's (`None`) or the file's `entry`.
    pub fn chosen(&self, entry: Option<&ProjectEntry>, why: &str) -> Result<PlatformSettings, ConfigError> {
        let Some(entry) = entry else { return self.require_platform() };
        self.refuse_env_project()?;
        self.project(entry, why)?.ok_or_else(|| entry.error("platform_url", &format!("(or region) is required {why}")))
    }

    /// With a projects file, each project names its own keys and hosts.
    pub fn refuse_env_project(&self) -> Result<(), ConfigError> {
        refuse_beside_file(&[
            ("POLYAI_API_KEY", self.api_key.is_some()),
            ("POLYAI_API_KEY_FILE", self.api_key_file.is_some()),
            ("POLYAI_PLATFORM_API_KEY", self.platform_api_key.is_some()),
            ("POLYAI_PLATFORM_API_KEY_FILE", self.platform_api_key_file.is_some()),
            ("POLYAI_REGION", self.region.is_some()),
            ("POLYAI_PLATFORM_URL", self.platform_url.is_some()),
        ])
    }
}
