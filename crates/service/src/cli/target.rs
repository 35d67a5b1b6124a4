//! What the one-off commands over the relay's projects (`backfill`, `reconcile`, `check`) work
//! on: the projects chosen from `RELAY_PROJECTS_FILE` (or the environment's one), their API
//! settings, and the relay's queue.

use clap::Args;

use super::stdout;
use crate::config::{
    forwarded, left_out, nothing_forwarded, ApiArgs, ApiSettings, BrokerArgs, ConfigError, Forwarding, LeftOut,
    ProjectChoice, ProjectName,
};

#[derive(Debug, Args)]
pub struct ProjectsTarget {
    #[command(flatten)]
    pub choice: ProjectChoice,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// The API settings of the chosen projects.
#[derive(Debug)]
pub struct ChosenApis {
    /// In the file's order; without a file, the one project the POLYAI_* variables describe.
    pub projects: Vec<ApiSettings>,
    /// They come from RELAY_PROJECTS_FILE: what a command prints names each project.
    pub from_file: bool,
    /// What each of them forwards, in the same order.
    pub forwarded: Vec<(ProjectName, Forwarding)>,
}

impl ChosenApis {
    /// Leaves out the projects that forward no `conversation.completed` of `client_env`'s calls:
    /// records of their finished calls (reconciled, backfilled) would be ones they filter out.
    /// Prints a line for each; an error when none is left.
    pub fn leave_out_unforwarded(&mut self, client_env: &str) -> anyhow::Result<()> {
        let left_out = left_out(&self.forwarded, client_env);
        if !left_out.is_empty() && left_out.len() == self.projects.len() {
            anyhow::bail!("{}", nothing_forwarded(&left_out, client_env, "--client-env"));
        }
        for LeftOut { project, why } in &left_out {
            let prefix = if self.from_file { format!("project `{project}`: ") } else { String::new() };
            stdout::line(format_args!("{prefix}left out: {why}"));
        }
        self.projects.retain(|api| !left_out.iter().any(|left| left.project == api.project));
        self.forwarded.retain(|(project, _)| !left_out.iter().any(|left| &left.project == project));
        Ok(())
    }
}

impl ProjectsTarget {
    /// Picks the projects (`--project`, or every one) and reads each one's API settings.
    pub fn apis(&self) -> Result<ChosenApis, ConfigError> {
        let chosen = self.choice.choose()?;
        Ok(ChosenApis {
            projects: self.api.chosen(chosen.entries())?,
            from_file: chosen.entries().is_some(),
            forwarded: forwarded(chosen.entries(), &self.broker.topology.forwarding()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        target: ProjectsTarget,
    }

    fn apis(args: &[&str]) -> Result<ChosenApis, String> {
        let command = Command::try_parse_from(std::iter::once("command").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        command.target.apis().map_err(|e| e.to_string())
    }

    /// A projects file of two projects with a key file each, removed with the test.
    struct TwoProjects(PathBuf);

    impl TwoProjects {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("relay-target-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("key"), "a-key\n").unwrap();
            let project = |name: &str, id: &str| {
                format!(
                    "[[project]]\nname = \"{name}\"\napi_key_file = \"{}\"\naccount_id = \"ws-acme\"\nproject_id = \"{id}\"\nbase_url = \"http://127.0.0.1:9999\"\n",
                    dir.join("key").display()
                )
            };
            let text = project("acme-uk", "PROJECT-UK") + &project("acme-us", "PROJECT-US");
            std::fs::write(dir.join("projects.toml"), text).unwrap();
            Self(dir)
        }

        fn file(&self) -> String {
            self.0.join("projects.toml").display().to_string()
        }
    }

    impl Drop for TwoProjects {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn without_a_file_the_one_project_of_the_flags() {
        let flags =
            ["--api-key", "k", "--base-url", "http://127.0.0.1:9999", "--account-id", "ws-a", "--project-id", "P"];
        let chosen = apis(&flags).unwrap();
        assert!(!chosen.from_file);
        let ids: Vec<_> = chosen.projects.iter().map(|p| p.project_id.as_str()).collect();
        assert_eq!(ids, ["P"]);
        assert!(apis(&flags[..6]).unwrap_err().contains("POLYAI_PROJECT_ID"));
    }

    #[test]
    fn with_a_file_every_project_or_the_one_named() {
        let file = TwoProjects::new();
        let chosen = apis(&["--projects-file", &file.file()]).unwrap();
        assert!(chosen.from_file);
        let ids: Vec<_> = chosen.projects.iter().map(|p| p.project_id.as_str()).collect();
        assert_eq!(ids, ["PROJECT-UK", "PROJECT-US"]);

        let chosen = apis(&["--projects-file", &file.file(), "--project", "acme-us"]).unwrap();
        let names: Vec<_> = chosen.projects.iter().map(|p| p.project.to_string()).collect();
        assert_eq!(names, ["acme-us"]);
        let beside = apis(&["--projects-file", &file.file(), "--api-key", "k"]).unwrap_err();
        assert!(beside.contains("POLYAI_API_KEY"), "{beside}");
    }
}
