//! What the worker does with what a signed event or the API hands it (design §10): ids that are
//! not ids, answers over their cap, and call data written owner-only.

use std::{os::unix::fs::PermissionsExt, path::Path};

use polyai_relay::config::AudioDirection;
use serde_json::json;

use crate::{
    backend::{both_backends, TempDir, TestQueue},
    fake_polyai::Reply,
    helpers::{completed, spawn_app_with, Options},
    polyai_mock,
};

both_backends! {
    async fn conversation_ids_that_are_not_ids_are_dead_lettered_and_never_fetched(backend: Backend) {
        let app = spawn_app_with(Options { backend, ..Options::default() }).await;
        let cases = [("..", "relative path"), (".", "relative path"), ("", "empty"), ("a/b", "separator"), ("a\\b", "separator"), ("CA\n1", "control")];
        for (id, why) in cases {
            assert_eq!(app.post_signed(&completed(id)).await.status(), 204, "{id:?}");
            let dead = app.next_dead_letter().await;
            let error = dead.error.unwrap_or_default();
            assert!(error.contains("not a conversation id") && error.contains(why), "{id:?}: {error}");
        }
        // A good id after them is fetched: the worker was running all along.
        assert_eq!(app.post_signed(&completed("CAfine")).await.status(), 204);
        assert_eq!(app.next_record().await.json["conversation"]["id"], "CAfine");
        let paths: Vec<String> = app.polyai.requests().into_iter().map(|seen| seen.path).collect();
        assert!(paths.iter().all(|p| p.ends_with("/conversations/CAfine")), "{paths:?}");
    }

    async fn an_api_answer_over_the_cap_is_dead_lettered_at_once_not_retried(backend: Backend) {
        let app = spawn_app_with(Options { backend, api_max_response: 64 << 10, ..Options::default() }).await;
        app.polyai.always(Reply::Json(json!({"id": "CAbig", "padding": "x".repeat(256 << 10)})));
        assert_eq!(app.post_signed(&completed("CAbig")).await.status(), 204);
        let dead = app.next_dead_letter().await;
        let error = dead.error.unwrap_or_default();
        assert!(error.contains("RELAY_API_MAX_RESPONSE"), "{error}");
        assert_eq!(app.polyai.by_id_requests().len(), 1, "asked once, not retried");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn call_data_is_written_owner_only() {
    let (mock, stop) = polyai_mock::mock().await;
    let voice = mock.conversations().iter().find(|c| c.channel == "VOICE-SIP" && !c.in_progress).unwrap().id.clone();
    let dir = TempDir::new();
    let audio_dir = dir.0.join("calls/audio");
    let audio = polyai_mock::recordings(audio_dir.clone(), AudioDirection::Combined, false);
    let app = spawn_app_with(polyai_mock::fetching_from(&mock, &audio)).await;
    assert_eq!(app.post_signed(&completed(&voice)).await.status(), 204);
    let record = app.next_record().await;
    let wav = record.json["audio"]["path"].as_str().expect("a recording").to_owned();
    assert_eq!(app.post_signed(&completed("..")).await.status(), 204);
    app.next_dead_letter().await;

    let TestQueue::Embedded { dir: data, .. } = &app.queue else { unreachable!() };
    for file in ["queue.sqlite3", "queue.sqlite3-wal", "queue.sqlite3-shm", "conversations.jsonl", "dead.jsonl", "lock"]
    {
        assert_eq!(mode(&data.0.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(Path::new(&wav)), 0o600, "{wav}");
    assert_eq!((mode(&dir.0.join("calls")), mode(&audio_dir)), (0o700, 0o700));
    stop.cancel();
}
