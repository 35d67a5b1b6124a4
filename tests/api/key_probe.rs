//! A project paused for a refused key is probed with the call that was refused, not with one its
//! key may be allowed (the list): otherwise it would resume, be refused again and pause, over
//! and over, its events held back all the while.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{extract::Path, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use polyai_relay::config::AudioDirection;
use tokio::sync::watch;

use crate::{
    backend::TempDir,
    broker::MESSAGE_WAIT,
    fake_polyai::{conversation, Reply},
    helpers::{completed, spawn_app_with, Options, TestApp},
    polyai_mock::recordings,
};

/// `/readyz` now: 503 while the only project is paused.
async fn readiness(app: &TestApp) -> u16 {
    app.admin_get("/readyz").await.status().as_u16()
}

#[tokio::test]
async fn a_key_refused_its_conversations_but_allowed_the_list_stays_paused_until_they_are_allowed() {
    let app = spawn_app_with(Options::default()).await;
    app.polyai.always(Reply::Status(403));
    app.polyai.probe_answers(Reply::Json(serde_json::json!({"conversations": [], "cursor": null})));
    assert_eq!(app.post_signed(&completed("CAscope")).await.status(), 204);
    app.wait_for_readiness(503).await;

    // The fetch, then two probes of the same conversation.
    app.polyai.wait_for_requests(3).await;
    assert!(app.polyai.list_requests().is_empty(), "probed with the list, which this key may read");
    assert!(app.polyai.by_id_requests().iter().all(|seen| seen.path.ends_with("/CAscope")));
    assert_eq!(readiness(&app).await, 503, "still paused");
    assert_eq!(app.queue.dead_count().await, 0);

    app.polyai.always(Reply::Conversation);
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], "CAscope");
    app.wait_for_readiness(200).await;
}

#[tokio::test]
async fn a_probe_the_api_does_not_answer_keeps_the_project_paused() {
    let app = spawn_app_with(Options::default()).await;
    // The fetch is refused; the first probe gets a 503, which says nothing of the key; the
    // second is served.
    app.polyai.script([Reply::Status(401), Reply::Status(503)]);
    assert_eq!(app.post_signed(&completed("CAunsure")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], "CAunsure");
    // The fetch, both probes, and the fetch once the key was accepted: none in between.
    assert_eq!(app.polyai.by_id_requests().len(), 4);
    assert_eq!(app.queue.dead_count().await, 0);
}

/// What the API below was asked: conversations by id, and recordings.
#[derive(Default, Clone, Copy, Debug)]
struct Asked {
    conversations: usize,
    recordings: usize,
}

/// An API whose key reads conversations and the list but, until `allowed` is set, not
/// recordings; what it was asked is sent on `asked`.
async fn recordings_refused_api(allowed: Arc<AtomicBool>, asked: watch::Sender<Asked>) -> String {
    let conversations = asked.clone();
    let by_id = move |Path((_, _, id)): Path<(String, String, String)>| {
        conversations.send_modify(|asked| asked.conversations += 1);
        async move { Json(conversation(&id)) }
    };
    let list = || async { Json(serde_json::json!({"conversations": [], "cursor": null})) };
    let audio = move || {
        asked.send_modify(|asked| asked.recordings += 1);
        let allowed = allowed.load(Ordering::SeqCst);
        async move {
            if allowed {
                b"RIFF\x04\x00\x00\x00WAVE".to_vec().into_response()
            } else {
                StatusCode::FORBIDDEN.into_response()
            }
        }
    };
    let app = Router::new()
        .route("/v3/{account}/{project}/conversations", get(list))
        .route("/v3/{account}/{project}/conversations/{id}", get(by_id))
        .route("/v3/{account}/{project}/conversations/{id}/audio", get(audio));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base_url
}

#[tokio::test]
async fn a_key_refused_recordings_is_probed_with_the_recording_and_resumes_once_allowed() {
    let allowed = Arc::new(AtomicBool::new(false));
    let asked = watch::Sender::new(Asked::default());
    let api = recordings_refused_api(allowed.clone(), asked.clone()).await;
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { api_url: Some(api), audio: Some(audio), ..Options::default() }).await;
    assert_eq!(app.post_signed(&completed("CArec")).await.status(), 204);
    app.wait_for_readiness(503).await;

    // The download, then two probes of it. Resumed in between, the worker would have fetched
    // the conversation again before being refused its recording again.
    let mut seen = asked.subscribe();
    let now = tokio::time::timeout(MESSAGE_WAIT, seen.wait_for(|asked| asked.recordings >= 3)).await;
    let now = *now.expect("probed in time").unwrap();
    assert_eq!(now.conversations, 1, "resumed and paused again between probes: {now:?}");
    assert_eq!(readiness(&app).await, 503, "still paused");
    assert_eq!(app.queue.dead_count().await, 0);

    allowed.store(true, Ordering::SeqCst);
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], "CArec");
    assert_eq!(record.json["audio"]["bytes"], 12, "{}", record.json["audio"]);
    app.wait_for_readiness(200).await;
}
