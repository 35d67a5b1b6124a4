//! The projects files under deploy/ are files the relay accepts, and the example shows every
//! field a `[[project]]` can have, with the defaults the relay really applies. (deploy/check.sh
//! checks that compose and Kubernetes mount what they name.)

use polyai_relay::config::{EventTypes, ProjectsFile};

/// Read at compile time, so editing any of them rebuilds this test.
const EXAMPLE: &str = include_str!("../../deploy/projects.example.toml");
const DEPLOYED: [(&str, &str); 2] = [
    ("deploy/projects.compose.toml", include_str!("../../deploy/projects.compose.toml")),
    ("deploy/kubernetes-projects/projects.toml", include_str!("../../deploy/kubernetes-projects/projects.toml")),
];
const PROJECTS_FILE_RS: &str = include_str!("../../crates/service/src/config/projects_file.rs");

/// The fields of `struct RawProject`: what a `[[project]]` may say.
fn fields() -> Vec<&'static str> {
    let start = PROJECTS_FILE_RS
        .find("struct RawProject {")
        .expect("crates/service/src/config/projects_file.rs has RawProject");
    let body = &PROJECTS_FILE_RS[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
    let fields: Vec<&str> = body.lines().filter_map(|line| line.trim().split_once(':').map(|(name, _)| name)).collect();
    assert!(fields.contains(&"name") && fields.contains(&"environments"), "{fields:?}");
    fields
}

fn parse(path: &str, text: &str) -> ProjectsFile {
    ProjectsFile::parse(text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn names(file: &ProjectsFile) -> Vec<&str> {
    file.projects.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn every_projects_file_under_deploy_is_one_the_relay_accepts() {
    assert_eq!(names(&parse("deploy/projects.example.toml", EXAMPLE)), ["acme-uk", "acme-us"]);
    for (path, text) in DEPLOYED {
        let file = parse(path, text);
        assert_eq!(names(&file), ["acme-uk", "acme-us"], "{path}");
        for project in &file.projects {
            // Everything `run` reads: the deployed files leave nothing to a variable.
            let complete = project.webhook_secret_file.is_some()
                && project.api_key_file.is_some()
                && project.account_id.is_some()
                && project.project_id.is_some()
                && project.runtime_url.is_some();
            assert!(complete, "{path}: project `{}` lacks a field `run` needs", project.name);
        }
    }
}

#[test]
fn the_example_shows_every_field_and_each_default_it_states_is_the_relays() {
    for field in fields() {
        let shown = EXAMPLE.lines().any(|line| line.trim_start_matches(['#', ' ']).starts_with(&format!("{field} = ")));
        assert!(shown, "deploy/projects.example.toml does not show the field `{field}`");
    }

    let file = parse("deploy/projects.example.toml", EXAMPLE);
    let uk = file.project("acme-uk").unwrap();
    assert_eq!(uk.runtime_url.as_ref().map(|u| u.as_str()), Some("https://api.uk-1.platform.polyai.app/"));
    assert_eq!(uk.platform_url.as_ref().map(|u| u.as_str()), Some("https://api.uk.poly.ai/"));
    assert_eq!(uk.environments, Some(Some(vec!["live".to_owned()])));
    // acme-us says only what has no default: its path and filters are the relay's defaults.
    let us = file.project("acme-us").unwrap();
    assert_eq!(us.path, "/polyai-events/acme-us");
    assert!(us.events.is_none() && us.environments.is_none() && us.platform_api_key_file.is_none());
    assert_eq!(us.runtime_url.as_ref().map(|u| u.as_str()), Some("https://api.us-1.platform.polyai.app/"));

    // The commented-out lines are valid too: uncommented, the file still passes.
    let uncommented: String = EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if fields().iter().any(|f| rest.starts_with(&format!("{f} = "))) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(uncommented, EXAMPLE);
    let all = parse("deploy/projects.example.toml, uncommented", &uncommented);
    let uk = all.project("acme-uk").unwrap();
    assert!(uk.webhook_secret_previous_file.is_some() && uk.platform_api_key_file.is_some());
    assert!(matches!(&uk.events, Some(EventTypes::Only(types)) if types.len() == 2));
}
