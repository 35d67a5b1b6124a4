//! Recordings: saved whole (temporary file, fsync, rename) for voice calls that have ended, never
//! asked for chats or calls still going, a missing one recorded rather than retried. Against the
//! mock API, which serves real WAVs, and the fake, which counts the requests.

use std::{path::Path, time::Duration};

use polyai_relay::config::{AudioDirection, ConversationApi};
use polyai_relay_devtools::mock_api::Conversation;

use serde_json::json;

use crate::{
    backend::TempDir,
    fake_polyai::{conversation, Reply, Seen},
    helpers::{completed, handoff, spawn_app_with, Options, TestApp},
    polyai_mock::{fetching_from, mock, recordings},
};

fn find(conversations: &[Conversation], test: impl Fn(&Conversation) -> bool) -> String {
    conversations.iter().find(|c| test(c)).expect("the mock generates one").id.clone()
}

fn assert_wav(path: &Path, bytes: u64) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(data.len() as u64, bytes);
    assert_eq!(&data[0..4], b"RIFF");
    assert_eq!(&data[8..12], b"WAVE");
    assert_eq!(u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize, data.len() - 8);
}

#[tokio::test]
async fn voice_recordings_are_saved_whole_and_chats_and_calls_in_progress_are_never_asked() {
    let (mock, _stop) = mock().await;
    let conversations = mock.conversations();
    let voice = find(conversations, |c| c.channel == "VOICE-SIP" && !c.in_progress);
    let chat = find(conversations, |c| c.channel != "VOICE-SIP" && !c.in_progress);
    // A call still in progress has no recording yet (the mock would answer 404).
    let going = find(conversations, |c| c.channel == "VOICE-SIP" && c.in_progress);
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Agent, true);
    let app = spawn_app_with(fetching_from(&mock, &audio)).await;

    assert_eq!(app.post_signed(&completed(&voice)).await.status(), 204);
    let record = app.next_record().await;
    let saved = &record.json["audio"];
    let path = Path::new(saved["path"].as_str().expect("a path"));
    assert_eq!(path, audio.dir.join(format!("{voice}.wav")));
    assert_wav(path, saved["bytes"].as_u64().unwrap());
    assert_eq!(saved["direction"], "agent");
    assert_eq!(saved["redacted"], true);
    let leftovers: Vec<_> =
        std::fs::read_dir(&audio.dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left: {leftovers:?}");
    assert_eq!(app.metric(r#"relay_recordings_total{project="default",result="saved"}"#).await, 1.0);

    assert_eq!(app.post_signed(&completed(&chat)).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], chat.as_str());
    assert!(record.json["audio"].is_null(), "a chat's recording is never asked for: {}", record.json["audio"]);

    assert_eq!(app.post_signed(&handoff(&going)).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], going.as_str());
    assert_eq!(record.json["audio"]["error"], "call in progress", "{}", record.json["audio"]);
    assert!(!audio.dir.join(format!("{going}.wav")).exists());
}

/// Against the fake API, which counts recording requests and keeps no recordings.
#[tokio::test]
async fn a_missing_recording_is_recorded_and_one_of_a_call_still_going_is_not_asked_for() {
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { audio: Some(audio.clone()), ..Options::default() }).await;
    // The fixture is a voice call that has ended.
    assert_eq!(app.post_signed(&completed("CAunrecorded")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["audio"]["error"], "no recording", "{}", record.json["audio"]);
    assert_eq!(record.json["audio"]["status"], 404, "{}", record.json["audio"]);
    assert_eq!(app.polyai.recording_requests().len(), 1);

    // A handoff comes while the call goes on; the Agents API's spelling is read too.
    for (id, field) in [("CAgoing", "in_progress"), ("CAgoing2", "inProgress")] {
        let mut going = conversation(id);
        going.as_object_mut().unwrap().remove("in_progress");
        going[field] = json!(true);
        app.polyai.script_conversation(id, [Reply::Json(going)]);
        assert_eq!(app.post_signed(&handoff(id)).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], id);
        assert_eq!(record.json["audio"]["error"], "call in progress", "{}", record.json["audio"]);
    }
    // Both spellings at once: still read as in progress, not as a chat.
    let mut both = conversation("CAgoing3");
    (both["in_progress"], both["inProgress"]) = (json!(true), json!(true));
    app.polyai.script_conversation("CAgoing3", [Reply::Json(both)]);
    assert_eq!(app.post_signed(&handoff("CAgoing3")).await.status(), 204);
    assert_eq!(app.next_record().await.json["audio"]["error"], "call in progress");

    let asked: Vec<_> = app.polyai.recording_requests().into_iter().map(|seen| seen.path).collect();
    assert_eq!(asked.len(), 1, "only the ended call's recording was asked for: {asked:?}");
    assert!(!dir.0.join("audio").join("CAgoing.wav").exists());

    // The call's end: its recording is asked for even if the API's answer still says the call
    // is going (the answer may lag behind the call; the recording may be there already).
    let mut lagging = conversation("CAlagging");
    lagging["in_progress"] = json!(true);
    app.polyai.script_conversation("CAlagging", [Reply::Json(lagging)]);
    assert_eq!(app.post_signed(&completed("CAlagging")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["audio"]["status"], 404, "asked for: {}", record.json["audio"]);
    assert_eq!(app.polyai.recording_requests().len(), 2);
}

/// A 429 to a recording after its conversation was served is one more in the project's row of
/// 429s: the pauses double as for the conversation's own.
#[tokio::test]
async fn recording_429s_in_a_row_are_waited_longer_each_time() {
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { audio: Some(audio), ..Options::default() }).await;
    app.polyai.script_recordings(std::iter::repeat_n(Reply::RateLimited("0"), 5));
    assert_eq!(app.post_signed(&completed("CArecording429")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["audio"]["status"], 404, "{}", record.json["audio"]);
    let asked = app.polyai.recording_requests();
    assert_eq!(asked.len(), 6);
    // RELAY_RETRY_BASE_DELAY (50 ms here) doubled for each: the fifth pause is 0.8 s, where a
    // row started again by each served conversation would pause 0.1 s each time.
    let last = asked[5].at - asked[4].at;
    assert!(last >= Duration::from_millis(800), "the fifth 429 in a row was waited {last:?}");
}

/// Recordings down while conversations are served: the event's own conversation, served, does
/// not make its recording's failures count, so it waits the outage out, asking for the
/// recording alone at each wait.
#[tokio::test]
async fn a_recordings_outage_longer_than_the_retries_is_waited_out_while_conversations_are_served() {
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { audio: Some(audio), max_attempts: 2, ..Options::default() }).await;
    app.polyai.script_recordings(std::iter::repeat_n(Reply::Status(503), 4));
    assert_eq!(app.post_signed(&completed("CArecordingsdown")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["audio"]["status"], 404, "the fake keeps no recordings: {}", record.json["audio"]);
    assert_eq!(app.polyai.recording_requests().len(), 5);
    // Its conversation fetched before the outage and once the recording came: while recordings
    // fail, each wait asks for the recording alone.
    assert_eq!(app.polyai.by_id_requests().len(), 2);
    assert_eq!(app.metric(r#"relay_recordings_total{project="default",result="unanswered"}"#).await, 4.0);
    assert_eq!(app.metric(r#"relay_recordings_total{project="default",result="none"}"#).await, 1.0);
    assert_eq!(app.metric(r#"relay_recordings_total{project="default",result="saved"}"#).await, 0.0);
}

/// Asked for first once its recording failed, the recording saved and the conversation then
/// failing: the event is retried in the usual order, and its record names the recording.
#[tokio::test]
async fn a_conversation_failing_after_a_recording_asked_first_is_retried_and_nothing_is_lost() {
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { audio: Some(audio.clone()), max_attempts: 3, ..Options::default() }).await;
    app.polyai.script([Reply::Conversation, Reply::Status(503)]);
    app.polyai.script_recordings([Reply::Status(503), Reply::Conversation, Reply::Conversation]);
    assert_eq!(app.post_signed(&completed("CAsecondfails")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], "CAsecondfails");
    let path = audio.dir.join("CAsecondfails.wav");
    assert_eq!(record.json["audio"]["path"], path.to_str().unwrap(), "{}", record.json["audio"]);
    assert!(path.exists());
    // Conversation, recording (503); recording, conversation (503); conversation, recording.
    assert_eq!(calls(&app), ["conversation", "recording", "recording", "conversation", "conversation", "recording"]);
}

/// A recording asked for first and served, its conversation then answered 404: the recording's
/// run is over, and the next try goes in the usual order.
#[tokio::test]
async fn a_recording_served_when_asked_first_ends_its_run_whatever_the_conversation_answers() {
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { audio: Some(audio.clone()), ..Options::default() }).await;
    app.polyai.script([Reply::Conversation, Reply::Status(404)]);
    app.polyai.script_recordings([Reply::Status(503), Reply::Conversation, Reply::Conversation]);
    assert_eq!(app.post_signed(&completed("CAnotyet")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["audio"]["path"], audio.dir.join("CAnotyet.wav").to_str().unwrap());
    assert_eq!(calls(&app), ["conversation", "recording", "recording", "conversation", "conversation", "recording"]);
}

/// A handoff's recording asked for first, and its conversation, fetched after, now says the call
/// is going: the record says what that conversation says.
#[tokio::test]
async fn a_recording_asked_first_is_recorded_only_where_the_conversation_fetched_after_wants_it() {
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { audio: Some(audio.clone()), ..Options::default() }).await;
    let mut going = conversation("CAagain");
    going["in_progress"] = json!(true);
    app.polyai.script([Reply::Conversation, Reply::Json(going)]);
    app.polyai.script_recordings([Reply::Status(503), Reply::Conversation]);
    assert_eq!(app.post_signed(&handoff("CAagain")).await.status(), 204);
    let record = app.next_record().await;
    assert_eq!(record.json["audio"]["error"], "call in progress", "{}", record.json["audio"]);
    assert_eq!(calls(&app), ["conversation", "recording", "recording", "conversation"]);
}

/// The API calls made so far, in order, by kind.
fn calls(app: &TestApp) -> Vec<&'static str> {
    let kind = |seen: &Seen| if seen.path.ends_with("/audio") { "recording" } else { "conversation" };
    app.polyai.requests().iter().map(kind).collect()
}

/// A recording the disk refuses is the relay's failure, not the API's: it counts as an attempt,
/// and the event is dead-lettered once they are spent, not held as if the API were down.
#[tokio::test]
async fn a_recording_the_disk_refuses_counts_as_an_attempt() {
    let dir = TempDir::new();
    let audio_dir = dir.0.join("audio");
    let audio = recordings(audio_dir.clone(), AudioDirection::Combined, false);
    let app = spawn_app_with(Options { audio: Some(audio), max_attempts: 2, ..Options::default() }).await;
    // Where the directory was, a file: no recording can be written.
    std::fs::remove_dir_all(&audio_dir).unwrap();
    std::fs::write(&audio_dir, b"not a directory").unwrap();
    app.polyai.script_recordings(std::iter::repeat_n(Reply::Conversation, 10));
    assert_eq!(app.post_signed(&completed("CAdiskrefuses")).await.status(), 204);
    let dead = app.next_dead_letter().await;
    assert_eq!(dead.attempts.as_deref(), Some("2"));
    let error = dead.error.unwrap();
    assert!(error.contains("cannot write the recording"), "{error}");
    assert_eq!(app.polyai.recording_requests().len(), 2);
    assert_eq!(app.metric(r#"relay_recordings_total{project="default",result="disk_failed"}"#).await, 2.0);
}

#[tokio::test]
async fn with_the_agents_api_conversations_and_recordings_come_from_the_platform_paths() {
    let (mock, _stop) = mock().await;
    let voice = find(mock.conversations(), |c| c.channel == "VOICE-SIP" && !c.in_progress);
    let dir = TempDir::new();
    let audio = recordings(dir.0.join("audio"), AudioDirection::Combined, false);
    let options = Options { conversation_api: ConversationApi::Agents, ..fetching_from(&mock, &audio) };
    let app = spawn_app_with(options).await;
    assert_eq!(app.post_signed(&completed(&voice)).await.status(), 204);
    let record = app.next_record().await;
    // The Agents API answers in camelCase: proof the record came from /v1/agents/….
    assert_eq!(record.json["conversation"]["conversationId"], voice.as_str(), "{}", record.json["conversation"]);
    let saved = &record.json["audio"];
    assert_wav(Path::new(saved["path"].as_str().unwrap()), saved["bytes"].as_u64().unwrap());
}
