//! Recordings on both paths: valid WAV for finished voice calls, 404 for chats and unknown ids.

use super::{assert_envelope, spawn_mock};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Checks a canonical PCM WAV header against the file's size; returns the data length.
fn assert_wav(bytes: &[u8]) -> usize {
    assert!(bytes.len() > 44, "{} bytes", bytes.len());
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(u32_at(bytes, 4) as usize, bytes.len() - 8, "RIFF size");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(&bytes[12..16], b"fmt ");
    assert_eq!(u32_at(bytes, 16), 16, "PCM fmt chunk");
    assert_eq!(u16_at(bytes, 20), 1, "PCM");
    assert_eq!(u16_at(bytes, 22), 1, "mono");
    assert_eq!(u32_at(bytes, 24), 8_000, "8 kHz");
    assert_eq!(u32_at(bytes, 28), 16_000, "byte rate");
    assert_eq!(u16_at(bytes, 32), 2, "block align");
    assert_eq!(u16_at(bytes, 34), 16, "16-bit");
    assert_eq!(&bytes[36..40], b"data");
    let data = u32_at(bytes, 40) as usize;
    assert_eq!(data, bytes.len() - 44, "data size");
    assert!(bytes.len() <= 64 * 1024, "a small file: {} bytes", bytes.len());
    data
}

#[tokio::test]
async fn a_finished_voice_call_has_a_valid_wav_on_both_paths() {
    let mock = spawn_mock().await;
    let call = mock.running.conversations().iter().find(|c| c.has_recording()).unwrap();
    let v3 = mock.get(&mock.v3(&format!("/{}/audio", call.id))).await;
    assert_eq!(v3.status(), 200);
    assert_eq!(v3.headers()["content-type"], "audio/wav");
    let v3 = v3.bytes().await.unwrap();
    let data = assert_wav(&v3);
    assert_eq!(data, (call.total_duration as usize * 10).clamp(250, 2000) * 16, "length follows the call");

    let agents = mock.get(&mock.agents(&format!("/{}/audio", call.id))).await;
    assert_eq!(agents.status(), 200);
    assert_eq!(agents.bytes().await.unwrap(), v3, "the same recording on both paths");

    let user = mock.get(&mock.v3(&format!("/{}/audio?direction=user", call.id))).await.bytes().await.unwrap();
    assert_wav(&user);
    assert_ne!(user, v3, "one side is not the combined recording");
    let redacted = mock.get(&mock.v3(&format!("/{}/audio?redacted=true", call.id))).await.bytes().await.unwrap();
    assert_eq!(assert_wav(&redacted), data);
    assert_ne!(redacted, v3);
}

#[tokio::test]
async fn chats_unknown_ids_and_calls_in_progress_have_no_recording() {
    let mock = spawn_mock().await;
    let conversations = mock.running.conversations();
    let chat = conversations.iter().find(|c| c.channel == "WEBCHAT").unwrap();
    let live_call = conversations.iter().find(|c| c.is_voice() && c.in_progress).unwrap();
    for id in [chat.id.as_str(), live_call.id.as_str(), "CA00000000000000000000000000000000"] {
        let response = mock.get(&mock.v3(&format!("/{id}/audio"))).await;
        assert_envelope(response, 404, "CONVERSATIONS_RECORDING_NOT_FOUND").await;
        let response = mock.get(&mock.agents(&format!("/{id}/audio"))).await;
        assert_envelope(response, 404, "CONVERSATIONS_RECORDING_NOT_FOUND").await;
    }
}

#[tokio::test]
async fn an_unknown_direction_is_a_400() {
    let mock = spawn_mock().await;
    let call = mock.running.conversations().iter().find(|c| c.has_recording()).unwrap();
    let response = mock.get(&mock.v3(&format!("/{}/audio?direction=both", call.id))).await;
    assert_envelope(response, 400, "CONVERSATIONS_VALIDATION_FAILED").await;
}
