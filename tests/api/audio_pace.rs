//! Recordings are bounded by progress, not by total time: one that keeps coming is saved however
//! long it takes, one that stops coming fails within `RELAY_API_TIMEOUT` instead of hanging.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::Path,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures_util::{stream, StreamExt};
use polyai_relay::config::{AudioDirection, AudioSettings};

use crate::{
    backend::{Backend, TempDir},
    fake_polyai::conversation,
    helpers::{completed, spawn_app_with, Options, TestApp},
    outcome::record_or_dead_letter,
    polyai_mock::recordings,
};

/// Short, so the tests are quick; a tenth of it is far more than any chunk's wait.
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// The trickled recording: `CHUNKS` chunks of `CHUNK` bytes, one every `PACE`, so that the whole
/// takes (`CHUNKS` - 1) × `PACE` = 2.7 s, longer than `API_TIMEOUT`.
const CHUNKS: usize = 10;
const CHUNK: usize = 16 << 10;
const PACE: Duration = Duration::from_millis(300);

/// The conversation whose recording trickles in, one whose recording stops after its first chunk,
/// and one whose recording request is never answered at all.
const TRICKLING: &str = "CAtrickling";
const STALLING: &str = "CAstalling";
const SILENT: &str = "CAsilent";

/// Chunk `n` of the trickled recording: bytes of its own, so a chunk lost or doubled shows.
fn chunk(n: usize) -> Vec<u8> {
    vec![n as u8; CHUNK]
}

/// When the trickled recording's first and last chunks were handed to the connection.
#[derive(Default)]
struct Sent {
    first: Option<Instant>,
    last: Option<Instant>,
}

/// An API answering every conversation (a voice call) at once, and its recording as the id says.
async fn pacing_api() -> (String, Arc<Mutex<Sent>>) {
    let sent = Arc::new(Mutex::new(Sent::default()));
    let times = sent.clone();
    let by_id = |Path((_, _, id)): Path<(String, String, String)>| async move { Json(conversation(&id)) };
    let audio = move |Path((_, _, id)): Path<(String, String, String)>| {
        let times = times.clone();
        async move {
            match id.as_str() {
                TRICKLING => trickle(times),
                STALLING => stall(),
                SILENT => std::future::pending().await,
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let app = Router::new()
        .route("/v3/{account}/{project}/conversations/{id}", get(by_id))
        .route("/v3/{account}/{project}/conversations/{id}/audio", get(audio));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base_url, sent)
}

/// The recording, a chunk every `PACE` (the first at once), noting when the first and last went.
fn trickle(sent: Arc<Mutex<Sent>>) -> Response {
    let ticks = tokio::time::interval(PACE);
    let chunks = stream::unfold((ticks, 0), move |(mut ticks, n)| {
        let sent = sent.clone();
        async move {
            if n == CHUNKS {
                return None;
            }
            ticks.tick().await;
            let mut sent = sent.lock().unwrap();
            let now = Some(Instant::now());
            if n == 0 {
                sent.first = now;
            }
            sent.last = now;
            Some((Ok::<_, Infallible>(chunk(n)), (ticks, n + 1)))
        }
    });
    Body::from_stream(chunks).into_response()
}

/// The answer's headers and a first chunk, then nothing, with the connection kept open.
fn stall() -> Response {
    let first = stream::once(async { Ok::<_, Infallible>(chunk(0)) });
    Body::from_stream(first.chain(stream::pending())).into_response()
}

/// A relay whose worker fetches from the pacing API and saves recordings; a failed attempt
/// dead-letters its event at once, so a failure shows without waiting out the retries.
async fn relay(api: String, audio: &AudioSettings) -> TestApp {
    spawn_app_with(Options {
        backend: Backend::Embedded,
        api_url: Some(api),
        audio: Some(audio.clone()),
        api_timeout: API_TIMEOUT,
        max_attempts: 1,
        ..Options::default()
    })
    .await
}

/// Names in `audio`'s directory: a failed download leaves no temporary file behind.
fn files_in(audio: &AudioSettings) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(&audio.dir) else { return Vec::new() };
    dir.filter_map(Result::ok).map(|entry| entry.file_name().to_string_lossy().into_owned()).collect()
}

#[tokio::test]
async fn a_recording_that_keeps_coming_is_saved_whole_though_it_takes_longer_than_the_api_timeout() {
    let (api, sent) = pacing_api().await;
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = relay(api, &audio).await;
    assert_eq!(app.post_signed(&completed(TRICKLING)).await.status(), 204);

    let record = record_or_dead_letter(&app).await.unwrap_or_else(|dead| panic!("dead-lettered: {:?}", dead.error));
    let saved = &record.json["audio"];
    assert_eq!(saved["bytes"], (CHUNKS * CHUNK) as u64, "{saved}");
    let data = std::fs::read(audio.dir.join(format!("{TRICKLING}.wav"))).unwrap();
    assert!(data == (0..CHUNKS).flat_map(chunk).collect::<Vec<_>>(), "the file holds every chunk, in order");
    // What makes this test worth its name: the download did outlast the timeout.
    let sent = sent.lock().unwrap();
    let took = sent.last.unwrap() - sent.first.unwrap();
    assert!(took > API_TIMEOUT, "the recording came within {took:?}, not over {API_TIMEOUT:?}");
}

#[tokio::test]
async fn a_recording_that_stops_coming_fails_instead_of_hanging() {
    let (api, _) = pacing_api().await;
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = relay(api, &audio).await;
    assert_eq!(app.post_signed(&completed(STALLING)).await.status(), 204);

    let dead =
        record_or_dead_letter(&app).await.map(|record| record.json).expect_err("no record of a stalled download");
    let error = dead.error.expect("the dead letter says why");
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(files_in(&audio), Vec::<String>::new(), "nothing is left of the partial recording");
}

#[tokio::test]
async fn a_recording_request_never_answered_fails_instead_of_hanging() {
    let (api, _) = pacing_api().await;
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = relay(api, &audio).await;
    assert_eq!(app.post_signed(&completed(SILENT)).await.status(), 204);

    let dead = record_or_dead_letter(&app).await.map(|record| record.json).expect_err("no record without a recording");
    let error = dead.error.expect("the dead letter says why");
    assert!(error.contains("timed out"), "{error}");
}
