//! `--project NAME` of the one-off commands (`backfill`, `reconcile`, `check`, `register`):
//! which of `RELAY_PROJECTS_FILE`'s projects a command works on.

use clap::Args;

use super::{ConfigError, ProjectEntry, ProjectsArgs, DEFAULT_PROJECT};

#[derive(Debug, Clone, Default, Args)]
pub struct ProjectChoice {
    #[command(flatten)]
    pub file: ProjectsArgs,
    /// The project of RELAY_PROJECTS_FILE to work on. Unset: every project, in the file's order
    /// (`register`, which works on one, takes the file's only project). Without the file there is
    /// one project, `default`.
    #[arg(long, env = "RELAY_PROJECT")]
    pub project: Option<String>,
}

/// The projects a command works on.
#[derive(Debug, Clone)]
pub enum Chosen {
    /// No projects file: the one project the POLYAI_* variables describe.
    Environment,
    /// From the file: the one `--project` named, or every project in the file's order. Never empty.
    File(Vec<ProjectEntry>),
}

impl ProjectChoice {
    /// Reads and checks the file, and picks the projects; an unknown name is an error listing
    /// the known ones.
    pub fn choose(&self) -> Result<Chosen, ConfigError> {
        let name = self.project.as_deref().map(str::trim).filter(|name| !name.is_empty());
        match (self.file.load()?, name) {
            (None, None | Some(DEFAULT_PROJECT)) => Ok(Chosen::Environment),
            (None, Some(name)) => Err(ConfigError::new(
                "RELAY_PROJECTS_FILE",
                format!(
                    "--project `{name}` needs RELAY_PROJECTS_FILE: without it the POLYAI_* variables describe one project, `{DEFAULT_PROJECT}`"
                ),
            )),
            (Some(file), Some(name)) => Ok(Chosen::File(vec![file.project(name)?.clone()])),
            (Some(file), None) => Ok(Chosen::File(file.projects)),
        }
    }
}

impl Chosen {
    /// The file's projects, or `None` for the environment's one.
    pub fn entries(&self) -> Option<&[ProjectEntry]> {
        match self {
            Self::Environment => None,
            Self::File(entries) => Some(entries),
        }
    }

    /// The one project of a command that works on one: the environment's, the one `--project`
    /// named, or the file's only one. Several: an error asking for `--project`.
    pub fn one(&self, command: &str) -> Result<Option<&ProjectEntry>, ConfigError> {
        match self.entries() {
            None => Ok(None),
            Some([entry]) => Ok(Some(entry)),
            Some(entries) => {
                let names: Vec<&str> = entries.iter().map(|p| p.name.as_str()).collect();
                Err(ConfigError::new(
                    "--project",
                    format!(
                        "RELAY_PROJECTS_FILE lists several projects and `{command}` works on one: name it with --project ({})",
                        names.join(", ")
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// A projects file listing `acme-uk` and `acme-us`, removed with the test.
    struct TwoProjects(PathBuf);

    impl TwoProjects {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("relay-projects-{}.toml", uuid::Uuid::new_v4().simple()));
            std::fs::write(&path, "[[project]]\nname = \"acme-uk\"\n[[project]]\nname = \"acme-us\"\n").unwrap();
            Self(path)
        }
    }

    impl Drop for TwoProjects {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn choose(file: Option<&Path>, project: Option<&str>) -> Result<Chosen, ConfigError> {
        let file = ProjectsArgs { projects_file: file.map(Path::to_path_buf) };
        ProjectChoice { file, project: project.map(str::to_owned) }.choose()
    }

    fn names(chosen: &Chosen) -> Vec<&str> {
        chosen.entries().unwrap().iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn without_a_file_only_the_default_project_is_named() {
        for project in [None, Some("default"), Some(" ")] {
            assert!(matches!(choose(None, project).unwrap(), Chosen::Environment), "{project:?}");
        }
        let error = choose(None, Some("acme-uk")).unwrap_err().to_string();
        assert!(error.contains("--project `acme-uk` needs RELAY_PROJECTS_FILE"), "{error}");
        assert!(Chosen::Environment.one("register").unwrap().is_none());
    }

    #[test]
    fn with_a_file_the_named_project_or_every_one() {
        let file = TwoProjects::new();
        let chosen = choose(Some(&file.0), None).unwrap();
        assert_eq!(names(&chosen), ["acme-uk", "acme-us"]);
        let several = chosen.one("register").unwrap_err().to_string();
        assert!(several.contains("`register` works on one: name it with --project (acme-uk, acme-us)"), "{several}");

        let chosen = choose(Some(&file.0), Some("acme-us")).unwrap();
        assert_eq!(names(&chosen), ["acme-us"]);
        assert_eq!(chosen.one("register").unwrap().unwrap().name.as_str(), "acme-us");

        let unknown = choose(Some(&file.0), Some("acme-fr")).unwrap_err().to_string();
        assert!(unknown.contains("--project `acme-fr` is not in RELAY_PROJECTS_FILE (acme-uk, acme-us)"), "{unknown}");
    }
}
