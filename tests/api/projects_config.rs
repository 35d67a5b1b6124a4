//! `RELAY_PROJECTS_FILE` mistakes stop the real binary at start-up with one line naming the
//! project and the field (design §12). The file's own checks are unit-tested in
//! `crates/service/src/config/projects_file_tests.rs`; these prove the commands read it and say so.

use crate::{backend::TempDir, process::run_to_exit};

const AMQP: (&str, &str) = ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");

/// A directory with a projects file whose projects' secret files exist, unless `missing` names one.
struct Projects {
    dir: TempDir,
}

impl Projects {
    fn new() -> Self {
        let dir = TempDir::new();
        for name in ["uk-webhook", "uk-key", "us-webhook", "us-key"] {
            std::fs::write(dir.0.join(name), format!("secret-of-{name}\n")).unwrap();
        }
        Self { dir }
    }

    /// Writes `projects.toml`; `{dir}` in `text` becomes the directory of the secret files.
    fn write(&self, text: &str) -> String {
        let path = self.dir.0.join("projects.toml");
        std::fs::write(&path, text.replace("{dir}", &self.dir.0.display().to_string())).unwrap();
        path.display().to_string()
    }
}

const UK: &str = r#"
[[project]]
name = "acme-uk"
webhook_secret_file = "{dir}/uk-webhook"
api_key_file = "{dir}/uk-key"
account_id = "ws-acme"
project_id = "PROJECT-UK"
region = "uk"
"#;

/// `command` with `file` stops at start-up, saying every one of `expected`, and no secret.
async fn refused(command: &str, file: &str, extra: &[(&str, &str)], expected: &[&str]) {
    let mut env = vec![AMQP, ("RELAY_PROJECTS_FILE", file)];
    env.extend_from_slice(extra);
    let (code, stderr) = run_to_exit(&[command], &env).await;
    assert_eq!(code, Some(1), "{stderr}");
    for words in expected {
        assert!(stderr.contains(words), "`{words}` missing from: {stderr}");
    }
    assert!(!stderr.contains("secret-of-") && !stderr.contains("whsec_env_value"), "a secret in: {stderr}");
}

#[tokio::test]
async fn a_missing_projects_file_is_named() {
    refused(
        "run",
        "/nonexistent/projects.toml",
        &[],
        &["RELAY_PROJECTS_FILE /nonexistent/projects.toml: cannot read it"],
    )
    .await;
}

#[tokio::test]
async fn duplicate_names_and_paths_name_the_project() {
    let projects = Projects::new();
    let twice = projects.write(&format!("{UK}{}", UK.replace("PROJECT-UK", "PROJECT-UK2")));
    refused("run", &twice, &[], &["project `acme-uk`: name is used by another project too"]).await;
    let same_path = projects
        .write(&format!("{UK}{}", UK.replace("name = \"acme-uk\"", "name = \"b\"\npath = \"/polyai-events/acme-uk\"")));
    refused("serve", &same_path, &[], &["project `b`: path `/polyai-events/acme-uk` is project `acme-uk`'s path too"])
        .await;
}

#[tokio::test]
async fn two_projects_with_one_webhook_secret_are_refused() {
    let projects = Projects::new();
    let us = UK.replace("acme-uk", "acme-us").replace("PROJECT-UK", "PROJECT-US").replace("uk-key", "us-key");
    // A block copied, its secret file left as it was.
    let copied = projects.write(&format!("{UK}{us}"));
    refused("serve", &copied, &[], &["project `acme-us`: its webhook secret is project `acme-uk`'s too"]).await;
    // The same secret in two files, or as one's previous secret, likewise.
    std::fs::write(projects.dir.0.join("us-webhook"), "secret-of-uk-webhook\n").unwrap();
    let two_files = projects.write(&format!("{UK}{}", us.replace("uk-webhook", "us-webhook")));
    refused("serve", &two_files, &[], &["project `acme-us`: its webhook secret is project `acme-uk`'s too"]).await;
    std::fs::write(projects.dir.0.join("us-webhook"), "secret-of-us-webhook\n").unwrap();
    let previous = us.replace(
        "webhook_secret_file = \"{dir}/uk-webhook\"",
        "webhook_secret_file = \"{dir}/us-webhook\"\nwebhook_secret_previous_file = \"{dir}/uk-webhook\"",
    );
    let file = projects.write(&format!("{UK}{previous}"));
    refused("serve", &file, &[], &["project `acme-us`: its webhook secret is project `acme-uk`'s too"]).await;
}

#[tokio::test]
async fn a_missing_secret_file_names_the_project_and_the_field_but_never_a_secret() {
    let projects = Projects::new();
    let file = projects.write(&UK.replace("uk-webhook", "absent-webhook"));
    refused("serve", &file, &[], &["project `acme-uk`: webhook_secret_file: cannot read", "absent-webhook"]).await;
    let file = projects.write(&UK.replace("uk-key", "absent-key"));
    refused("work", &file, &[], &["project `acme-uk`: api_key_file: cannot read"]).await;
    // `serve` needs no API key, `work` no webhook secret: each reads only what it uses.
    let no_key = projects.write(&UK.replace("api_key_file", "# api_key_file"));
    refused("work", &no_key, &[], &["project `acme-uk`: api_key_file is required to fetch conversations"]).await;
    refused("run", &no_key, &[], &["project `acme-uk`: api_key_file is required"]).await;
    // A key goes into a request header: a character no header can carry is refused at start-up.
    std::fs::write(projects.dir.0.join("uk-key"), "secret-of-uk\u{7f}-key\n").unwrap();
    let file = projects.write(UK);
    refused("work", &file, &[], &["project `acme-uk`: api_key_file holds a character an HTTP header cannot carry"])
        .await;
}

#[tokio::test]
async fn a_wrong_host_family_or_an_unknown_region_names_the_project() {
    let projects = Projects::new();
    let build_host = projects.write(&UK.replace("region = \"uk\"", "base_url = \"https://api.uk.poly.ai\""));
    refused(
        "work",
        &build_host,
        &[],
        &["project `acme-uk`: base_url points at api.uk.poly.ai", "api.uk-1.platform.polyai.app"],
    )
    .await;
    let mars = projects.write(&UK.replace("region = \"uk\"", "region = \"mars\""));
    refused("run", &mars, &[], &["project `acme-uk`: region `mars` is not a PolyAI region"]).await;
    let misspelt = projects.write(&UK.replace("account_id", "acount_id"));
    refused("run", &misspelt, &[], &["unknown field `acount_id`"]).await;
}

#[tokio::test]
async fn one_project_variables_beside_a_projects_file_are_refused_not_ignored() {
    let projects = Projects::new();
    let file = projects.write(UK);
    refused(
        "serve",
        &file,
        &[("POLYAI_WEBHOOK_SECRET", "whsec_env_value")],
        &["POLYAI_WEBHOOK_SECRET is set, but RELAY_PROJECTS_FILE"],
    )
    .await;
    refused("work", &file, &[("POLYAI_ACCOUNT_ID", "ws-env")], &["POLYAI_ACCOUNT_ID is set, but RELAY_PROJECTS_FILE"])
        .await;
    refused("serve", &file, &[("RELAY_PATH", "/x")], &["RELAY_PATH is set"]).await;
}
