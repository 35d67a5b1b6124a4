//! The PolyAI API settings shared by the worker, `check`, `backfill` and `register`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use super::{
    args::{boolean, duration, required_id, size},
    defaults,
    hosts::{self, Region},
    secret::{self, secret_value},
    ApiSettings, AudioSettings, BaseUrl, ConfigError, PlatformSettings, ProjectName,
};

/// Which path fetches one conversation; PolyAI's docs disagree (design §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ConversationApi {
    /// `GET {POLYAI_BASE_URL}/v3/{account}/{project}/conversations/{id}` (the quickstart).
    #[default]
    V3,
    /// `GET {POLYAI_PLATFORM_URL}/v1/agents/{project}/conversations/{id}` (the current reference).
    Agents,
}

/// Which side of a call the recording holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AudioDirection {
    #[default]
    Combined,
    User,
    Agent,
}

impl AudioDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Combined => "combined",
            Self::User => "user",
            Self::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PlatformArgs {
    /// `us`, `uk` or `euw`: picks the API hosts.
    #[arg(long, env = "POLYAI_REGION")]
    pub region: Option<String>,
    /// The `api.{us,uk,eu}.poly.ai` host of the Webhooks and Agents APIs; from the region by default.
    #[arg(long, env = "POLYAI_PLATFORM_URL")]
    pub platform_url: Option<String>,
    /// Workspace-scoped key of the Webhooks/Agents APIs; POLYAI_API_KEY when unset.
    #[arg(long, env = "POLYAI_PLATFORM_API_KEY", value_parser = secret_value, hide_env_values = true)]
    pub platform_api_key: Option<SecretString>,
    #[arg(long, env = "POLYAI_PLATFORM_API_KEY_FILE")]
    pub platform_api_key_file: Option<PathBuf>,
    /// Conversations API v3 key, sent as `x-api-key`.
    #[arg(long, env = "POLYAI_API_KEY", value_parser = secret_value, hide_env_values = true)]
    pub api_key: Option<SecretString>,
    #[arg(long, env = "POLYAI_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Timeout of one API call; of a recording download, the longest wait for its answer and for
    /// each read of its body.
    #[arg(long, env = "RELAY_API_TIMEOUT", default_value = defaults::API_TIMEOUT, value_parser = duration("RELAY_API_TIMEOUT"))]
    pub api_timeout: Duration,
}

impl PlatformArgs {
    fn region(&self) -> Result<Option<Region>, ConfigError> {
        self.region.as_deref().filter(|r| !r.trim().is_empty()).map(|r| Region::parse("POLYAI_REGION", r)).transpose()
    }

    /// The Webhooks/Agents host and key, or `None` when neither a URL nor a region says where.
    pub fn platform(&self) -> Result<Option<PlatformSettings>, ConfigError> {
        let url = match (&self.platform_url, self.region()?) {
            (Some(url), _) if !url.trim().is_empty() => BaseUrl::parse("POLYAI_PLATFORM_URL", url)?,
            (_, Some(region)) => region.platform_url(),
            _ => return Ok(None),
        };
        hosts::check_platform_url("POLYAI_PLATFORM_URL", &url)?;
        let key = match secret::resolve(
            "POLYAI_PLATFORM_API_KEY",
            self.platform_api_key.as_ref(),
            self.platform_api_key_file.as_deref(),
        )? {
            Some(key) => secret::header_safe("POLYAI_PLATFORM_API_KEY", key)?,
            None => secret::header_safe(
                "POLYAI_API_KEY",
                secret::require(
                    "POLYAI_PLATFORM_API_KEY",
                    self.api_key.as_ref(),
                    self.api_key_file.as_deref(),
                    "(or POLYAI_API_KEY) for the Webhooks and Agents APIs",
                )?,
            )?,
        };
        Ok(Some(PlatformSettings { url, api_key: key, timeout: self.api_timeout }))
    }

    /// Like [`Self::platform`], for commands that cannot work without it.
    pub fn require_platform(&self) -> Result<PlatformSettings, ConfigError> {
        self.platform()?.ok_or_else(|| {
            ConfigError::new("POLYAI_PLATFORM_URL", "POLYAI_REGION (us, uk or euw) or POLYAI_PLATFORM_URL is required")
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub platform: PlatformArgs,
    /// Overrides the runtime/data host picked by the region.
    #[arg(long, env = "POLYAI_BASE_URL")]
    pub base_url: Option<String>,
    /// Workspace id, the first path segment of the v3 API.
    #[arg(long, env = "POLYAI_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Agent (project) id, the second path segment of the v3 API.
    #[arg(long, env = "POLYAI_PROJECT_ID")]
    pub project_id: Option<String>,
    /// Which path fetches a conversation by id: `v3` or `agents`.
    #[arg(long, env = "RELAY_CONVERSATION_API", value_enum, default_value = "v3")]
    pub conversation_api: ConversationApi,
    /// Bytes of one API answer at most; a larger one is a permanent error for its event.
    #[arg(long, env = "RELAY_API_MAX_RESPONSE", default_value = defaults::API_MAX_RESPONSE, value_parser = size("RELAY_API_MAX_RESPONSE"))]
    pub api_max_response: usize,
}

impl ApiArgs {
    pub fn settings(&self) -> Result<ApiSettings, ConfigError> {
        let p = &self.platform;
        let api_key =
            secret::require("POLYAI_API_KEY", p.api_key.as_ref(), p.api_key_file.as_deref(), "to fetch conversations")?;
        let api_key = secret::header_safe("POLYAI_API_KEY", api_key)?;
        let base_url = match (&self.base_url, p.region()?) {
            (Some(url), _) if !url.trim().is_empty() => BaseUrl::parse("POLYAI_BASE_URL", url)?,
            (_, Some(region)) => region.runtime_url(),
            _ => {
                return Err(ConfigError::new(
                    "POLYAI_REGION",
                    "POLYAI_REGION (us, uk or euw) or POLYAI_BASE_URL is required",
                ));
            }
        };
        hosts::check_runtime_url("POLYAI_BASE_URL", &base_url)?;
        let platform = p.platform()?;
        if self.conversation_api == ConversationApi::Agents && platform.is_none() {
            return Err(ConfigError::new(
                "POLYAI_PLATFORM_URL",
                "RELAY_CONVERSATION_API=agents needs POLYAI_PLATFORM_URL or POLYAI_REGION",
            ));
        }
        Ok(ApiSettings {
            project: ProjectName::default(),
            base_url,
            api_key,
            account_id: required_id("POLYAI_ACCOUNT_ID", self.account_id.as_deref())?,
            project_id: required_id("POLYAI_PROJECT_ID", self.project_id.as_deref())?,
            timeout: p.api_timeout,
            conversation_api: self.conversation_api,
            platform,
            max_response: self.api_max_response,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct AudioArgs {
    /// Save the WAV of each voice conversation.
    #[arg(long, env = "RELAY_FETCH_AUDIO", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = boolean("RELAY_FETCH_AUDIO"))]
    pub fetch_audio: bool,
    /// Where recordings are written, as `{conversation_id}.wav`.
    #[arg(long, env = "RELAY_AUDIO_DIR", default_value = "./data/audio")]
    pub audio_dir: PathBuf,
    /// Which side of the call: `combined`, `user` or `agent`.
    #[arg(long, env = "RELAY_AUDIO_DIRECTION", value_enum, default_value = "combined")]
    pub audio_direction: AudioDirection,
    /// Ask for the redacted recording (callers without PII access always get it).
    #[arg(long, env = "RELAY_AUDIO_REDACTED", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = boolean("RELAY_AUDIO_REDACTED"))]
    pub audio_redacted: bool,
    /// Bytes of one recording at most; a larger one is a permanent error for its event.
    #[arg(long, env = "RELAY_AUDIO_MAX", default_value = "1GiB", value_parser = size("RELAY_AUDIO_MAX"))]
    pub audio_max: usize,
}

impl AudioArgs {
    pub fn settings(&self) -> Option<AudioSettings> {
        self.fetch_audio.then(|| AudioSettings {
            dir: self.audio_dir.clone(),
            direction: self.audio_direction,
            redacted: self.audio_redacted,
            max_bytes: self.audio_max as u64,
        })
    }
}
