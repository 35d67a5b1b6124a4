//! One relay's two projects against the mock API, which serves both (design §12): `acme-uk` is
//! the mock's primary tenant, `acme-us` a tenant of another account, each with its own keys. A
//! projects file names them, with their keys in files beside it.

use std::{collections::HashSet, time::Duration};

use polyai_relay_devtools::mock_api::{MockApi, MockConfig, MockControl, RunningMock, Tenant, PRIMARY_TENANT};
use secrecy::SecretString;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::backend::TempDir;

pub const UK: &str = "acme-uk";
pub const US: &str = "acme-us";
pub const KEY_UK: &str = "uk-v3-key-5b1e7a";
pub const KEY_US: &str = "us-v3-key-c7d2f0";
/// `acme-us`'s workspace-scoped key of the Webhooks API, apart from its v3 key.
pub const PLATFORM_KEY_US: &str = "us-platform-key-0a9f3c";
const ACCOUNT_US: &str = "ws-us";
const PROJECT_US: &str = "PROJECT-US";

/// The mock behind both projects, and the directory of the projects file and its key files.
pub struct TwoProjects {
    pub mock: RunningMock,
    pub dir: TempDir,
    /// The projects file's path.
    pub file: String,
    stop: CancellationToken,
}

impl TwoProjects {
    /// Calls that ended at least an hour ago (none settling), a few dozen per project.
    pub async fn start() -> Self {
        let config = MockConfig {
            api_key: SecretString::from(KEY_UK),
            conversations: 40,
            window: Duration::from_secs(12 * 3600),
            window_end: Some(OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(3600)),
            tenants: vec![Tenant {
                platform_api_key: Some(SecretString::from(PLATFORM_KEY_US)),
                ..Tenant::new(US, ACCOUNT_US, PROJECT_US, KEY_US)
            }],
            ..MockConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let mock = MockApi::start(config, listener, stop.clone()).await.unwrap();
        let dir = TempDir::new();
        for (name, content) in [
            ("uk-webhook", "whsec_uk_file"),
            ("us-webhook", "whsec_us_file"),
            ("uk-key", KEY_UK),
            ("us-key", KEY_US),
            ("us-platform-key", PLATFORM_KEY_US),
        ] {
            std::fs::write(dir.0.join(name), format!("{content}\n")).unwrap();
        }
        let file = dir.0.join("projects.toml").display().to_string();
        let projects = Self { mock, dir, file, stop };
        projects.write(|text| text);
        projects
    }

    /// Writes the projects file, as `edit` changes it; `{dir}` stands for the key files' directory.
    pub fn write(&self, edit: impl FnOnce(String) -> String) {
        let base = self.mock.base_url();
        let text = format!(
            r#"
[[project]]
name = "{UK}"
webhook_secret_file = "{{dir}}/uk-webhook"
api_key_file = "{{dir}}/uk-key"
account_id = "{uk_account}"
project_id = "{uk_project}"
base_url = "{base}"
platform_url = "{base}"

[[project]]
name = "{US}"
webhook_secret_file = "{{dir}}/us-webhook"
api_key_file = "{{dir}}/us-key"
platform_api_key_file = "{{dir}}/us-platform-key"
account_id = "{ACCOUNT_US}"
project_id = "{PROJECT_US}"
base_url = "{base}"
platform_url = "{base}"
"#,
            uk_account = polyai_relay_devtools::mock_api::DEFAULT_ACCOUNT_ID,
            uk_project = polyai_relay_devtools::mock_api::DEFAULT_PROJECT_ID,
        );
        let text = edit(text).replace("{dir}", &self.dir.0.display().to_string());
        std::fs::write(&self.file, text).unwrap();
    }

    /// A projects file's `text` with `line` added to `project`'s entry (for [`Self::write`]).
    pub fn with_line(text: String, project: &str, line: &str) -> String {
        let name = format!("name = \"{project}\"\n");
        assert!(text.contains(&name), "{project} is in the file");
        text.replace(&name, &format!("{name}{line}\n"))
    }

    pub fn control(&self) -> MockControl {
        self.mock.control()
    }

    /// The mock's tenant behind a project.
    pub fn tenant(project: &str) -> &'static str {
        match project {
            UK => PRIMARY_TENANT,
            _ => US,
        }
    }

    /// Ids of the project's finished live calls: what a backfill or reconcile of the last day
    /// finds.
    pub fn finished_calls(&self, project: &str) -> HashSet<String> {
        let settled = OffsetDateTime::now_utc() - Duration::from_secs(600);
        self.mock
            .conversations_of(Self::tenant(project))
            .unwrap()
            .iter()
            .filter(|c| c.environment == "live" && c.finished_at().is_some_and(|f| f < settled))
            .map(|c| c.id.clone())
            .collect()
    }
}

impl Drop for TwoProjects {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
