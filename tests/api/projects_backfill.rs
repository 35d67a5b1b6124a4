//! `backfill` with `RELAY_PROJECTS_FILE` (design §12), as the built binary against a mock that
//! serves both projects: each project's conversations are listed with its own key, published
//! under its name, and checkpointed apart, so a run resumes project by project.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use lapin::options::BasicGetOptions;
use polyai_relay::{config::EventTypes, queue::embedded::CONVERSATIONS_FILE};
use serde_json::Value;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    backend::{Backend, TempDir, TestQueue},
    helpers::header,
    process::{as_refs, run_to_exit_with_stdout},
    two_projects::{TwoProjects, UK, US},
};

async fn backfill(env: &[(String, String)], args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["backfill", "--since", "24h", "--page-size", "10"];
    all.extend_from_slice(args);
    let env = as_refs(env);
    run_to_exit_with_stdout(&all, &env).await
}

/// The project and conversation id of each record of the embedded queue, in order.
fn embedded_records(dir: &TempDir) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.0.join(CONVERSATIONS_FILE))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let text = |value: &Value| value.as_str().unwrap().to_owned();
            (text(&record["project"]), text(&record["conversation"]["id"]))
        })
        .collect()
}

/// `ids` as records of `project`.
fn of(project: &str, ids: &HashSet<String>) -> HashSet<(String, String)> {
    ids.iter().map(|id| (project.to_owned(), id.clone())).collect()
}

/// Whether a summary line of `project` says `words`.
fn has_line(stdout: &str, project: &str, words: &str) -> bool {
    stdout.lines().any(|line| line.starts_with(&format!("project `{project}`: ")) && line.contains(words))
}

fn checkpoints(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("backfill-checkpoint"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn backfill_project_publishes_that_projects_conversations_with_its_key_and_name() {
    let projects = TwoProjects::start().await;
    let queue = TestQueue::new(Backend::Amqp, EventTypes::All).await;
    let data = TempDir::new();
    let mut env = queue.env();
    env.push(("RELAY_PROJECTS_FILE".into(), projects.file.clone()));
    env.push(("RELAY_DATA_DIR".into(), data.0.display().to_string()));
    let (code, stdout, stderr) = backfill(&env, &["--project", US]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let expected = projects.finished_calls(US);
    assert!(has_line(&stdout, US, &format!("published {},", expected.len())), "{stdout}");
    assert!(!stdout.contains("acme-uk"), "{stdout}");

    let broker = queue.broker();
    let channel = broker.channel().await;
    let mut published: HashMap<String, Option<String>> = HashMap::new();
    while let Some(got) =
        channel.basic_get(broker.conversations_queue().into(), BasicGetOptions { no_ack: true }).await.unwrap()
    {
        let record: Value = serde_json::from_slice(&got.delivery.data).unwrap();
        assert_eq!(record["project"], US, "the record names its project as the worker's do");
        let id = record["conversation"]["id"].as_str().unwrap().to_owned();
        published.insert(id, header(&got.delivery, "x-relay-project"));
    }
    assert_eq!(published.keys().cloned().collect::<HashSet<_>>(), expected, "acme-us's calls, none of acme-uk's");
    assert!(published.values().all(|p| p.as_deref() == Some(US)), "{published:?}");
    assert!(checkpoints(&data).is_empty(), "a finished run leaves no checkpoint");
}

/// The two projects, an embedded queue of their own, and the environment that backfills both
/// into it.
async fn both_projects_on_an_embedded_queue() -> (TwoProjects, TestQueue, Vec<(String, String)>) {
    let projects = TwoProjects::start().await;
    let queue = TestQueue::new(Backend::Embedded, EventTypes::All).await;
    let mut env = queue.env();
    env.push(("RELAY_PROJECTS_FILE".into(), projects.file.clone()));
    (projects, queue, env)
}

/// A first run with acme-us's key refused: it fails, and acme-uk is backfilled all the same with
/// its checkpoint kept. Its stdout and stderr.
async fn a_run_with_acme_us_refused(
    projects: &TwoProjects,
    env: &[(String, String)],
    dir: &TempDir,
) -> (String, String) {
    projects.control().revoke(TwoProjects::tenant(US)).unwrap();
    let (code, stdout, stderr) = backfill(env, &[]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(checkpoints(dir), ["backfill-checkpoint.acme-uk.json"]);
    (stdout, stderr)
}

#[tokio::test]
async fn a_backfill_of_every_project_resumes_only_the_project_that_failed() {
    let (projects, queue, env) = both_projects_on_an_embedded_queue().await;
    let TestQueue::Embedded { dir, .. } = &queue else { unreachable!() };
    let (uk, us) = (projects.finished_calls(UK), projects.finished_calls(US));

    let (stdout, stderr) = a_run_with_acme_us_refused(&projects, &env, dir).await;
    assert!(has_line(&stdout, UK, &format!("published {},", uk.len())), "{stdout}");
    assert!(stderr.contains("project `acme-us`: listing conversations failed: 401"), "{stderr}");
    assert!(stderr.contains("check the project's api_key_file"), "{stderr}");
    assert!(stderr.contains("backfilling project(s) acme-us failed"), "{stderr}");
    assert_eq!(embedded_records(dir).into_iter().collect::<HashSet<_>>(), of(UK, &uk));

    // Run again: acme-uk is not redone (only the seconds since its window ended are listed, if
    // the clock has passed a second), acme-us is backfilled, and no checkpoint is left.
    projects.control().restore(TwoProjects::tenant(US)).unwrap();
    let (code, stdout, stderr) = backfill(&env, &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(has_line(&stdout, UK, "finished by an earlier run"), "{stdout}");
    assert!(has_line(&stdout, UK, &format!("published {},", uk.len())), "{stdout}");
    assert!(has_line(&stdout, US, &format!("published {},", us.len())), "{stdout}");
    let records = embedded_records(dir);
    assert_eq!(records.len(), uk.len() + us.len(), "each once");
    assert_eq!(records.into_iter().collect::<HashSet<_>>(), &of(UK, &uk) | &of(US, &us));
    assert!(checkpoints(dir).is_empty(), "{:?}", checkpoints(dir));
}

/// Moves a checkpoint's window `by` into the past: the checkpoint of the same run made that
/// much earlier, since its window is the one `--since 24h` resolved to then.
fn age(path: &std::path::Path, by: Duration) {
    let mut checkpoint: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for bound in ["start_time", "end_time"] {
        let time = OffsetDateTime::parse(checkpoint[bound].as_str().unwrap(), &Rfc3339).unwrap();
        checkpoint[bound] = Value::from((time - by).format(&Rfc3339).unwrap());
    }
    std::fs::write(path, serde_json::to_vec(&checkpoint).unwrap()).unwrap();
}

#[tokio::test]
async fn a_backfill_of_every_project_run_again_days_later_lists_the_finished_projects_calls_of_the_day_asked_for() {
    let (projects, queue, env) = both_projects_on_an_embedded_queue().await;
    let TestQueue::Embedded { dir, .. } = &queue else { unreachable!() };
    let (uk, us) = (projects.finished_calls(UK), projects.finished_calls(US));

    a_run_with_acme_us_refused(&projects, &env, dir).await;
    // As if that run was two days ago: every call of the mock is of a day its window left out.
    age(&dir.0.join("backfill-checkpoint.acme-uk.json"), Duration::from_secs(2 * 86400));
    let before = embedded_records(dir).len();

    projects.control().restore(TwoProjects::tenant(US)).unwrap();
    let (code, stdout, stderr) = backfill(&env, &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(has_line(&stdout, UK, "finished by an earlier run, then listed"), "{stdout}");
    let this_run = embedded_records(dir).split_off(before);
    assert_eq!(this_run.len(), uk.len() + us.len(), "each once");
    assert_eq!(this_run.into_iter().collect::<HashSet<_>>(), &of(UK, &uk) | &of(US, &us), "acme-uk's day too");
    assert!(checkpoints(dir).is_empty(), "{:?}", checkpoints(dir));
}

/// Records of a project's `live` calls when it forwards only its sandbox's events would be ones
/// it filters out: the project is left out, with a line saying why, and the other backfilled.
#[tokio::test]
async fn a_project_that_forwards_no_calls_of_the_environment_is_left_out() {
    let (projects, queue, env) = both_projects_on_an_embedded_queue().await;
    let TestQueue::Embedded { dir, .. } = &queue else { unreachable!() };
    projects.write(|text| TwoProjects::with_line(text, US, r#"environments = ["sandbox"]"#));
    let (code, stdout, stderr) = backfill(&env, &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(has_line(&stdout, US, "left out: it forwards no `live` calls (its `environments`"), "{stdout}");
    let uk = projects.finished_calls(UK);
    assert!(has_line(&stdout, UK, &format!("published {},", uk.len())), "{stdout}");
    assert_eq!(embedded_records(dir).into_iter().collect::<HashSet<_>>(), of(UK, &uk));

    // That project alone: nothing to do, said as an error.
    let (code, stdout, stderr) = backfill(&env, &["--project", US]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("no project forwards conversation.completed of `live` calls (--client-env)"), "{stderr}");
    // Its sandbox's calls it does forward.
    let (code, stdout, stderr) = backfill(&env, &["--project", US, "--client-env", "sandbox", "--dry-run"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("left out"), "{stdout}");
}

#[tokio::test]
async fn one_checkpoint_file_cannot_serve_several_projects() {
    let projects = TwoProjects::start().await;
    let dir = TempDir::new();
    let checkpoint = dir.0.join("mine.json").display().to_string();
    let env = vec![
        ("RELAY_PROJECTS_FILE".to_owned(), projects.file.clone()),
        ("RELAY_DATA_DIR".to_owned(), dir.0.display().to_string()),
    ];
    let (code, _, stderr) = backfill(&env, &["--checkpoint", &checkpoint]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--checkpoint names one file, and this run backfills 2 projects"), "{stderr}");
    let (code, stdout, stderr) = backfill(&env, &["--checkpoint", &checkpoint, "--project", UK]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}
