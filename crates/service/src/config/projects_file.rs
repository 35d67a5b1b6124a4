//! `RELAY_PROJECTS_FILE` (design §12): the PolyAI projects one relay serves, each with its own
//! webhook path, secrets, API key, ids and host. Without the file, the environment describes one
//! project, as it always has.
//!
//! The file is read and checked once, whole, at start-up: every mistake is one line naming the
//! project and the field. Secret files are read only by the commands that need them (`serve`
//! needs no API key, `work` no webhook secret).

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use super::{
    args::required_id,
    hosts::{self, Region},
    secret, values, BaseUrl, ConfigError, EventTypes, Forwarding, ProjectName,
};

#[derive(Debug, Clone, Default, Args)]
pub struct ProjectsArgs {
    /// A TOML file listing the PolyAI projects this relay serves (see deploy/projects.example.toml);
    /// unset: the POLYAI_* variables describe one project.
    #[arg(long, env = "RELAY_PROJECTS_FILE")]
    pub projects_file: Option<PathBuf>,
}

impl ProjectsArgs {
    /// The checked file, or `None` when the environment describes the one project.
    pub fn load(&self) -> Result<Option<ProjectsFile>, ConfigError> {
        self.projects_file.as_deref().map(ProjectsFile::load).transpose()
    }
}

/// With a projects file, each project names its own secrets, key, ids, hosts and path: a
/// one-project variable set beside it would be silently ignored, so it is refused instead.
/// `set` pairs each such variable with whether it is set.
pub fn refuse_beside_file(set: &[(&str, bool)]) -> Result<(), ConfigError> {
    match set.iter().find(|(_, set)| *set) {
        Some((variable, _)) => Err(ConfigError::new(
            variable,
            format!("{variable} is set, but RELAY_PROJECTS_FILE gives each project its own; unset {variable}"),
        )),
        None => Ok(()),
    }
}

/// The file as written; `deny_unknown_fields` turns a misspelt field into an error, not a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    project: Vec<RawProject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: String,
    path: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    webhook_secret_previous_file: Option<PathBuf>,
    api_key_file: Option<PathBuf>,
    platform_api_key_file: Option<PathBuf>,
    account_id: Option<String>,
    project_id: Option<String>,
    region: Option<String>,
    base_url: Option<String>,
    platform_url: Option<String>,
    events: Option<Vec<String>>,
    environments: Option<Vec<String>>,
}

/// Every project of the file, checked: valid and unique names and paths, known regions, hosts of
/// the right family. Never empty.
#[derive(Debug, Clone)]
pub struct ProjectsFile {
    pub projects: Vec<ProjectEntry>,
}

/// One `[[project]]`, checked as far as it can be without reading its secret files.
#[derive(Debug, Clone)]
pub struct ProjectEntry {
    pub name: ProjectName,
    /// The webhook path PolyAI posts this project's events to.
    pub path: String,
    pub webhook_secret_file: Option<PathBuf>,
    pub webhook_secret_previous_file: Option<PathBuf>,
    pub api_key_file: Option<PathBuf>,
    /// The workspace-scoped key of the Webhooks/Agents APIs; the API key when unset.
    pub platform_api_key_file: Option<PathBuf>,
    pub account_id: Option<String>,
    pub project_id: Option<String>,
    /// The Conversations v3 host: `base_url`, else the region's.
    pub runtime_url: Option<BaseUrl>,
    /// The Webhooks/Agents host: `platform_url`, else the region's.
    pub platform_url: Option<BaseUrl>,
    /// `None`: the relay's `RELAY_EVENTS`.
    pub events: Option<EventTypes>,
    /// `None`: the relay's `RELAY_ENVIRONMENTS`.
    pub environments: Option<Option<Vec<String>>>,
}

impl ProjectsFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let in_file = |message: String| {
            ConfigError::new("RELAY_PROJECTS_FILE", format!("RELAY_PROJECTS_FILE {}: {message}", path.display()))
        };
        let text = std::fs::read_to_string(path).map_err(|e| in_file(format!("cannot read it: {}", e.kind())))?;
        Self::parse(&text).map_err(|e| in_file(e.to_string()))
    }

    /// Checks the file's text; errors name the project (by name, or by position before the name
    /// is known) and the field.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| ConfigError::new("RELAY_PROJECTS_FILE", format!("not valid: {}", e.message())))?;
        if raw.project.is_empty() {
            return Err(ConfigError::new("RELAY_PROJECTS_FILE", "lists no [[project]]"));
        }
        let mut projects: Vec<ProjectEntry> = Vec::with_capacity(raw.project.len());
        for (index, raw) in raw.project.into_iter().enumerate() {
            let entry = ProjectEntry::check(index, raw)?;
            if projects.iter().any(|p| p.name == entry.name) {
                return Err(entry.error("name", "is used by another project too"));
            }
            if let Some(other) = projects.iter().find(|p| p.path == entry.path) {
                return Err(entry.error("path", &format!("`{}` is project `{}`'s path too", entry.path, other.name)));
            }
            projects.push(entry);
        }
        Ok(Self { projects })
    }

    /// The project named `name`, or an error listing the ones there are.
    pub fn project(&self, name: &str) -> Result<&ProjectEntry, ConfigError> {
        self.projects.iter().find(|p| p.name.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = self.projects.iter().map(|p| p.name.as_str()).collect();
            ConfigError::new(
                "--project",
                format!("--project `{name}` is not in RELAY_PROJECTS_FILE ({})", known.join(", ")),
            )
        })
    }

    /// What the broker binds for the receiver: every type some project forwards.
    pub fn event_types(&self, default: &EventTypes) -> EventTypes {
        let mut types = Vec::new();
        for project in &self.projects {
            match project.events.as_ref().unwrap_or(default) {
                EventTypes::All => return EventTypes::All,
                EventTypes::Only(only) => {
                    types.extend(only.iter().filter(|t| !types.contains(*t)).cloned().collect::<Vec<_>>())
                }
            }
        }
        EventTypes::Only(types)
    }
}

impl ProjectEntry {
    fn check(index: usize, raw: RawProject) -> Result<Self, ConfigError> {
        let name = ProjectName::parse(&format!("project #{}", index + 1), raw.name.trim())?;
        let mut entry = Self {
            path: format!("/polyai-events/{name}"),
            name,
            webhook_secret_file: raw.webhook_secret_file,
            webhook_secret_previous_file: raw.webhook_secret_previous_file,
            api_key_file: raw.api_key_file,
            platform_api_key_file: raw.platform_api_key_file,
            account_id: None,
            project_id: None,
            runtime_url: None,
            platform_url: None,
            events: None,
            environments: None,
        };
        if let Some(path) = raw.path {
            entry.path = entry.checked_path(path)?;
        }
        entry.account_id = raw.account_id.map(|id| entry.id("account_id", &id)).transpose()?;
        entry.project_id = raw.project_id.map(|id| entry.id("project_id", &id)).transpose()?;
        let region = raw.region.map(|r| Region::parse(&entry.label("region"), &r)).transpose()?;
        entry.runtime_url = match raw.base_url {
            Some(url) => Some(BaseUrl::parse(&entry.label("base_url"), &url)?),
            None => region.map(Region::runtime_url),
        };
        if let Some(url) = &entry.runtime_url {
            hosts::check_runtime_url(&entry.label("base_url"), url)?;
        }
        entry.platform_url = match raw.platform_url {
            Some(url) => Some(BaseUrl::parse(&entry.label("platform_url"), &url)?),
            None => region.map(Region::platform_url),
        };
        if let Some(url) = &entry.platform_url {
            hosts::check_platform_url(&entry.label("platform_url"), url)?;
        }
        entry.events = raw.events.map(|events| entry.events(events)).transpose()?;
        entry.environments = raw.environments.map(|list| entry.environments(list)).transpose()?;
        Ok(entry)
    }

    /// What the project forwards: its own `events` and `environments`, else the relay's
    /// `defaults`.
    pub fn forwarding(&self, defaults: &Forwarding) -> Forwarding {
        Forwarding {
            event_types: self.events.clone().unwrap_or_else(|| defaults.event_types.clone()),
            environments: self.environments.clone().unwrap_or_else(|| defaults.environments.clone()),
        }
    }

    /// `project `acme-uk`: field`: how errors name what is wrong.
    pub fn label(&self, field: &str) -> String {
        format!("project `{}`: {field}", self.name)
    }

    pub fn error(&self, field: &str, message: &str) -> ConfigError {
        ConfigError::new("RELAY_PROJECTS_FILE", format!("{} {message}", self.label(field)))
    }

    /// Paths become routes: a plain absolute path, without the characters a router would read
    /// as a parameter or a query.
    fn checked_path(&self, path: String) -> Result<String, ConfigError> {
        if path.len() < 2 || !values::plain_route(&path) {
            return Err(
                self.error("path", &format!("`{path}` must be an absolute path of letters, digits and `/-_.~`"))
            );
        }
        Ok(path)
    }

    fn id(&self, field: &str, value: &str) -> Result<String, ConfigError> {
        required_id(&self.label(field), Some(value))
    }

    fn events(&self, events: Vec<String>) -> Result<EventTypes, ConfigError> {
        let events: Vec<String> = events.into_iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
        match events.as_slice() {
            [] => Err(self.error("events", "is empty; leave it out to forward RELAY_EVENTS")),
            [all] if all == "*" => Ok(EventTypes::All),
            _ if events.iter().any(|e| e == "*") => Err(self.error("events", "mixes `*` with event types")),
            _ => Ok(EventTypes::Only(events)),
        }
    }

    fn environments(&self, list: Vec<String>) -> Result<Option<Vec<String>>, ConfigError> {
        let joined = list.join(",");
        match joined.trim() {
            "" => Err(self.error("environments", "is empty; leave it out to forward RELAY_ENVIRONMENTS")),
            "all" | "*" => Ok(None),
            list => Ok(Some(values::parse_list(list))),
        }
    }

    /// Reads a secret file named by `field`, which the command needs `why`.
    pub fn require_secret(
        &self,
        field: &str,
        path: Option<&Path>,
        why: &str,
    ) -> Result<secrecy::SecretString, ConfigError> {
        let path = path.ok_or_else(|| self.error(field, &format!("is required {why}")))?;
        secret::read_file(&self.label(field), path)
    }

    /// Reads an API key file named by `field`: a secret that goes into a request header.
    pub fn require_key(
        &self,
        field: &str,
        path: Option<&Path>,
        why: &str,
    ) -> Result<secrecy::SecretString, ConfigError> {
        secret::header_safe(&self.label(field), self.require_secret(field, path, why)?)
    }

    /// A field the command cannot work without.
    pub fn require<'a, T>(&self, field: &str, value: Option<&'a T>, why: &str) -> Result<&'a T, ConfigError> {
        value.ok_or_else(|| self.error(field, &format!("is required {why}")))
    }
}

#[cfg(test)]
#[path = "projects_file_tests.rs"]
mod tests;
