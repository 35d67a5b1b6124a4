//! `check` and `register` with `RELAY_PROJECTS_FILE` (design §12), as the built binary against a
//! mock that serves both projects, each with its own keys: `check` checks every project (or
//! `--project NAME`), `register` works on one project with its platform key and path.

use crate::{
    broker::amqp_url,
    process::run_to_exit_with_stdout,
    two_projects::{TwoProjects, KEY_UK, KEY_US, PLATFORM_KEY_US, UK, US},
};

/// Runs `args` with the projects file and the broker; (exit code, stdout, stderr).
async fn run(projects: &TwoProjects, args: &[&str], extra: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let amqp = amqp_url();
    let mut env = vec![("RELAY_PROJECTS_FILE", projects.file.as_str()), ("AMQP_URL", amqp.as_str())];
    env.extend_from_slice(extra);
    let (code, stdout, stderr) = run_to_exit_with_stdout(args, &env).await;
    for key in [KEY_UK, KEY_US, PLATFORM_KEY_US, "whsec_uk_file", "whsec_us_file"] {
        assert!(!stdout.contains(key) && !stderr.contains(key), "a secret in:\n{stdout}{stderr}");
    }
    (code, stdout, stderr)
}

#[tokio::test]
async fn check_checks_every_project_and_fails_naming_the_one_whose_key_is_refused() {
    let projects = TwoProjects::start().await;
    let (code, stdout, stderr) = run(&projects, &["check"], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for project in [UK, US] {
        for line in [
            format!("✓ project `{project}`: webhook_secret_file is readable"),
            format!("✓ project `{project}`: API settings: {}", projects.mock.base_url()),
            format!("✓ project `{project}`: the API key works"),
        ] {
            assert!(stdout.contains(&line), "`{line}` missing:\n{stdout}");
        }
    }
    assert!(stdout.contains("✓ project `acme-us`: platform_api_key_file is readable"), "{stdout}");
    assert!(stdout.contains("✓ RabbitMQ at"), "{stdout}");

    projects.control().revoke(TwoProjects::tenant(US)).unwrap();
    let (code, stdout, stderr) = run(&projects, &["check"], &[]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("✓ project `acme-uk`: the API key works"), "{stdout}");
    assert!(stdout.contains("✗ project `acme-us`: API: 401"), "{stdout}");
    assert!(stdout.contains("check the project's api_key_file"), "the fix names the file's field: {stdout}");

    // --project checks that project only.
    let (code, stdout, stderr) = run(&projects, &["check", "--project", UK], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("acme-us"), "{stdout}");
    let (code, stdout, _) = run(&projects, &["check"], &[("RELAY_PROJECT", US)]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(!stdout.contains("acme-uk") && stdout.contains("✗ project `acme-us`: API: 401"), "{stdout}");
}

#[tokio::test]
async fn check_fails_on_two_projects_holding_one_webhook_secret_as_serve_would() {
    let projects = TwoProjects::start().await;
    projects.write(|text| text.replace("{dir}/us-webhook", "{dir}/uk-webhook"));
    let (code, stdout, stderr) = run(&projects, &["check"], &[]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("✗ project `acme-us`: its webhook secret is project `acme-uk`'s too"), "{stdout}");
}

#[tokio::test]
async fn check_fails_on_an_unreadable_secret_file_an_unknown_project_and_a_variable_beside_the_file() {
    let projects = TwoProjects::start().await;
    projects.write(|text| text.replace("{dir}/us-webhook", "{dir}/absent-webhook"));
    let (code, stdout, _) = run(&projects, &["check"], &[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("✗ project `acme-us`: webhook_secret_file: cannot read"), "{stdout}");
    assert!(stdout.contains("✓ project `acme-us`: the API key works"), "the other checks go on: {stdout}");

    projects.write(|text| text.replace("{dir}/us-key", "{dir}/absent-key"));
    let (code, stdout, _) = run(&projects, &["check"], &[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("✗ project `acme-us`: api_key_file: cannot read"), "{stdout}");
    assert!(stdout.contains("✓ project `acme-uk`: the API key works"), "{stdout}");

    projects.write(|text| text);
    let (code, stdout, _) = run(&projects, &["check", "--project", "acme-fr"], &[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("✗ --project `acme-fr` is not in RELAY_PROJECTS_FILE (acme-uk, acme-us)"), "{stdout}");

    let (code, stdout, _) = run(&projects, &["check"], &[("POLYAI_API_KEY", "env-key-value")]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("✗ POLYAI_API_KEY is set, but RELAY_PROJECTS_FILE gives each project its own"), "{stdout}");
    for variable in ["POLYAI_WEBHOOK_SECRET", "POLYAI_WEBHOOK_SECRET_PREVIOUS", "RELAY_PATH"] {
        let (code, stdout, _) = run(&projects, &["check"], &[(variable, "/whsec_env")]).await;
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stdout.contains(&format!("✗ {variable} is set, but RELAY_PROJECTS_FILE")), "{stdout}");
    }
}

#[tokio::test]
async fn without_a_projects_file_only_the_default_project_can_be_named() {
    let amqp = amqp_url();
    let env = [("AMQP_URL", amqp.as_str()), ("RELAY_PROJECT", "acme-uk")];
    for args in [
        &["check"][..],
        &["backfill", "--since", "1h", "--dry-run"],
        &["reconcile", "--since", "1h", "--dry-run"],
        &["register", "--list"],
    ] {
        let (code, stdout, stderr) = run_to_exit_with_stdout(args, &env).await;
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            format!("{stdout}{stderr}").contains("--project `acme-uk` needs RELAY_PROJECTS_FILE"),
            "{args:?}: {stdout}{stderr}"
        );
    }
}

#[tokio::test]
async fn register_uses_the_projects_platform_key_and_registers_its_path() {
    let projects = TwoProjects::start().await;
    let (code, stdout, stderr) =
        run(&projects, &["register", "--project", US, "--url", "https://relay.example.com"], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "project `acme-us`'s path is `/polyai-events/acme-us`: registering https://relay.example.com/polyai-events/acme-us"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("registered endpoint whe_") && stdout.contains("signing secret: "), "{stdout}");
    assert!(stdout.contains("Store it now, as project `acme-us`'s webhook_secret_file"), "{stdout}");
    assert!(stdout.contains("`polyai-relay register --project acme-us --rotate whe_"), "{stdout}");

    // Endpoints belong to the account: acme-us's is listed with its key, not with acme-uk's.
    let (code, stdout, _) = run(&projects, &["register", "--project", US, "--list"], &[]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("https://relay.example.com/polyai-events/acme-us"), "{stdout}");
    let (code, stdout, _) = run(&projects, &["register", "--project", UK, "--list"], &[]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("no webhook endpoints"), "acme-uk's API key is its platform key: {stdout}");

    // A full URL with the project's path is kept; another path is registered with a warning.
    let url = "https://hooks.example.com/relay/polyai-events/acme-uk";
    let (code, stdout, stderr) = run(&projects, &["register", "--project", UK, "--url", url], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("registering {url}")) && stderr.is_empty(), "{stdout}{stderr}");
    let (code, _, stderr) =
        run(&projects, &["register", "--project", UK, "--url", "https://relay.example.com/polyai-events"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("is not project `acme-uk`'s path `/polyai-events/acme-uk`"), "{stderr}");
}

/// A trailing slash would be a path the relay has no route for: every delivery a 404, which
/// PolyAI does not retry. And the endpoint subscribes to the types the project forwards.
#[tokio::test]
async fn register_drops_a_trailing_slash_and_subscribes_to_the_projects_events() {
    let projects = TwoProjects::start().await;
    projects.write(|text| {
        text.replace(
            &format!("name = \"{US}\"\n"),
            &format!("name = \"{US}\"\nevents = [\"conversation.completed\"]\n"),
        )
    });
    let url = "https://relay.example.com/polyai-events/acme-us/";
    let (code, stdout, stderr) = run(&projects, &["register", "--project", US, "--url", url], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let (code, stdout, _) = run(&projects, &["register", "--project", US, "--list"], &[]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("  https://relay.example.com/polyai-events/acme-us  conversation.completed\n"),
        "no slash, and only the project's type: {stdout}"
    );
}

#[tokio::test]
async fn register_refuses_without_one_project_and_explains_a_refused_platform_key() {
    let projects = TwoProjects::start().await;
    let (code, _, stderr) = run(&projects, &["register", "--list"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("RELAY_PROJECTS_FILE lists several projects and `register` works on one: name it with --project (acme-uk, acme-us)"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&projects, &["register", "--project", "acme-fr", "--list"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--project `acme-fr` is not in RELAY_PROJECTS_FILE (acme-uk, acme-us)"), "{stderr}");

    // acme-us's v3 key is not its platform key.
    projects.write(|text| text.replace("{dir}/us-platform-key", "{dir}/us-key"));
    let (code, _, stderr) = run(&projects, &["register", "--project", US, "--list"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("401") && stderr.contains("give project `acme-us` a platform_api_key_file"), "{stderr}");

    projects.write(|text| text.replace("platform_url", "# platform_url"));
    let (code, _, stderr) = run(&projects, &["register", "--project", US, "--list"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("project `acme-us`: platform_url (or region) is required to register webhooks"),
        "{stderr}"
    );

    projects.write(|text| text);
    let (code, _, stderr) =
        run(&projects, &["register", "--project", US, "--list"], &[("POLYAI_PLATFORM_API_KEY", "env-key")]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("POLYAI_PLATFORM_API_KEY is set, but RELAY_PROJECTS_FILE"), "{stderr}");
}
