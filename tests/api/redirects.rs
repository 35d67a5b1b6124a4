//! An API that answers with a redirect: the relay follows none, so the key never reaches the host
//! the `Location` names, and the failure is reported with that host but without the key.

use std::sync::{Arc, Mutex};

use axum::{
    extract::Path,
    http::{header::LOCATION, HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
    routing::get,
    Json, Router,
};
use polyai_relay::config::AudioDirection;

use crate::{
    backend::{Backend, DeadLetter, Record, TempDir},
    broker::amqp_url,
    fake_polyai::{conversation, ACCOUNT, API_KEY, PROJECT},
    helpers::{completed, spawn_app_with, Options},
    outcome::record_or_dead_letter,
    polyai_mock::recordings,
    process::run_to_exit_with_stdout,
};

/// The Webhooks API key `register` is given in these tests.
const PLATFORM_KEY: &str = "platform-key-never-redirected-7d2e";

/// Where the redirects point: records every request it gets (its path, and the key it carried),
/// and answers 404.
struct Trap {
    base_url: String,
    caught: Arc<Mutex<Vec<String>>>,
}

impl Trap {
    async fn start() -> Self {
        let caught = Arc::new(Mutex::new(Vec::new()));
        let seen = caught.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
                seen.lock().unwrap().push(format!("{} with x-api-key {key:?}", uri.path()));
                StatusCode::NOT_FOUND
            }
        });
        let base_url = serve(app).await;
        Self { base_url, caught }
    }

    /// Every request since the last look; the tests expect none.
    fn caught(&self) -> Vec<String> {
        std::mem::take(&mut *self.caught.lock().unwrap())
    }
}

/// An API that redirects every request to the same path on `trap`: 302 for a GET, 307 (which
/// would repeat the method and body) for anything else. With `conversations`, a conversation
/// by id is answered (a voice call), so that the worker goes on to ask for its recording.
async fn redirecting_api(trap: &Trap, conversations: bool) -> String {
    let target = trap.base_url.clone();
    let mut app = Router::new().fallback(move |method: Method, uri: Uri| {
        let location = format!("{target}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        async move {
            let status = if method == Method::GET { StatusCode::FOUND } else { StatusCode::TEMPORARY_REDIRECT };
            (status, [(LOCATION, location)]).into_response()
        }
    });
    if conversations {
        let by_id = |Path((_, _, id)): Path<(String, String, String)>| async move { Json(conversation(&id)) };
        app = app.route("/v3/{account}/{project}/conversations/{id}", get(by_id));
    }
    serve(app).await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base_url
}

/// Why the one event posted was dead-lettered: not followed, the redirect is the error, named by
/// the host it points at and without the key.
fn dead_letter_error(outcome: Result<Record, DeadLetter>) -> String {
    let dead = outcome.map(|record| record.json).expect_err("a dead letter, not a record");
    let error = dead.error.expect("the dead letter says why");
    assert!(!error.contains(API_KEY), "{error}");
    error
}

/// The worker, on the embedded queue, asking `api`; a failure dead-letters at its first attempt.
fn worker_asking(api: String) -> Options {
    Options { backend: Backend::Embedded, api_url: Some(api), max_attempts: 1, ..Options::default() }
}

#[tokio::test]
async fn a_redirected_conversation_fetch_is_dead_lettered_and_the_key_never_reaches_the_other_host() {
    let trap = Trap::start().await;
    let app = spawn_app_with(worker_asking(redirecting_api(&trap, false).await)).await;
    assert_eq!(app.post_signed(&completed("CAredirected")).await.status(), 204);

    let outcome = record_or_dead_letter(&app).await;
    assert_eq!(trap.caught(), Vec::<String>::new(), "the redirect was followed");
    let error = dead_letter_error(outcome);
    assert!(error.starts_with(&format!("302: redirected to {} (not followed", trap.base_url)), "{error}");
}

#[tokio::test]
async fn a_redirected_recording_download_is_dead_lettered_and_the_key_never_reaches_the_other_host() {
    let trap = Trap::start().await;
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let options = Options { audio: Some(audio.clone()), ..worker_asking(redirecting_api(&trap, true).await) };
    let app = spawn_app_with(options).await;
    assert_eq!(app.post_signed(&completed("CAvoice")).await.status(), 204);

    let outcome = record_or_dead_letter(&app).await;
    assert_eq!(trap.caught(), Vec::<String>::new(), "the redirect was followed");
    let error = dead_letter_error(outcome);
    assert!(error.starts_with(&format!("302: redirected to {} (not followed", trap.base_url)), "{error}");
    assert!(!audio.dir.join("CAvoice.wav").exists());
}

#[tokio::test]
async fn check_reports_a_redirect_with_its_fix_and_the_key_never_reaches_the_other_host() {
    let trap = Trap::start().await;
    let api = redirecting_api(&trap, false).await;
    let env = [
        ("POLYAI_API_KEY", API_KEY),
        ("POLYAI_BASE_URL", api.as_str()),
        ("POLYAI_ACCOUNT_ID", ACCOUNT),
        ("POLYAI_PROJECT_ID", PROJECT),
        ("POLYAI_WEBHOOK_SECRET", "whsec_check"),
        ("AMQP_URL", &amqp_url()),
    ];
    let (code, stdout, stderr) = run_to_exit_with_stdout(&["check"], &env).await;
    assert_eq!(trap.caught(), Vec::<String>::new(), "the redirect was followed");
    assert!(!stdout.contains(API_KEY) && !stderr.contains(API_KEY), "{stdout}{stderr}");
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("✗ API: 302: redirected to {}", trap.base_url)), "{stdout}");
    assert!(stdout.contains("does not follow"), "the fix is named: {stdout}");
}

#[tokio::test]
async fn register_reports_a_redirect_and_the_platform_key_never_reaches_the_other_host() {
    let trap = Trap::start().await;
    let api = redirecting_api(&trap, false).await;
    let env = [("POLYAI_PLATFORM_URL", api.as_str()), ("POLYAI_PLATFORM_API_KEY", PLATFORM_KEY)];
    // A listing (GET, 302) and a creation (POST, 307: followed, it would post the key again).
    for (args, status) in [(&["--list"][..], 302), (&["--url", "https://relay.example.com/polyai-events"][..], 307)] {
        let mut all = vec!["register"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run_to_exit_with_stdout(&all, &env).await;
        assert_eq!(trap.caught(), Vec::<String>::new(), "{args:?}: the redirect was followed");
        assert!(!stdout.contains(PLATFORM_KEY) && !stderr.contains(PLATFORM_KEY), "{stdout}{stderr}");
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(&format!("{status}: redirected to {}", trap.base_url)), "{args:?}: {stderr}");
    }
}
