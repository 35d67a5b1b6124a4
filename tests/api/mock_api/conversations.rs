//! The Conversations v3 list and by-id routes, and the agents route's camelCase detail.

use std::{collections::HashSet, time::Duration};

use polyai_relay_devtools::mock_api::{MockConfig, DEFAULT_ACCOUNT_ID, DEFAULT_PROJECT_ID};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use super::{assert_envelope, config, ids_of, spawn_mock, spawn_mock_with, window_end, KEY};

fn many() -> MockConfig {
    MockConfig { conversations: 250, ..config() }
}

#[tokio::test]
async fn cursor_pages_list_every_matching_conversation_exactly_once_in_order() {
    let mock = spawn_mock_with(many()).await;
    let expected: Vec<String> =
        mock.running.conversations().iter().filter(|c| c.environment == "live").map(|c| c.id.clone()).collect();
    let (ids, pages) = mock.list_all(&[("limit", "37")]).await;
    assert!(pages >= 5, "{pages} pages");
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len(), "no conversation twice");
    assert_eq!(ids, expected, "every live conversation, newest first");

    // The same holds with filters that leave gaps between matches.
    let filtered: Vec<String> = mock
        .running
        .conversations()
        .iter()
        .filter(|c| c.environment == "live" && c.channel == "VOICE-SIP" && !c.in_progress)
        .map(|c| c.id.clone())
        .collect();
    let query = [("limit", "10"), ("channel", "VOICE-SIP"), ("in_progress", "false")];
    assert_eq!(mock.list_all(&query).await.0, filtered);
}

#[tokio::test]
async fn offset_paging_returns_next_offset_until_the_last_page() {
    let mock = spawn_mock_with(many()).await;
    let (all, _) = mock.list_all(&[]).await;
    let (mut ids, mut offset) = (Vec::new(), 0usize);
    loop {
        let page = mock.list(&[("limit", "60"), ("offset", &offset.to_string())]).await;
        ids.extend(ids_of(&page));
        match page.get("next_offset") {
            Some(next) => offset = next.as_u64().unwrap() as usize,
            None => break,
        }
        assert_eq!(offset, ids.len());
    }
    assert_eq!(ids, all);
    let past_the_end = mock.list(&[("offset", "100000")]).await;
    assert_eq!(ids_of(&past_the_end).len(), 0);
    assert_eq!(past_the_end["cursor"], Value::Null);
}

#[tokio::test]
async fn cursor_paging_never_sends_next_offset_and_wins_over_an_offset() {
    let mock = spawn_mock_with(many()).await;
    let first = mock.list(&[("limit", "20")]).await;
    assert!(first.get("next_offset").is_none());
    let cursor = first["cursor"].as_str().unwrap();
    let second = mock.list(&[("limit", "20"), ("cursor", cursor), ("offset", "0")]).await;
    let (ids, _) = mock.list_all(&[]).await;
    assert_eq!(ids_of(&second), ids[20..40]);
}

#[tokio::test]
async fn the_time_window_and_client_env_filter_the_list() {
    let mock = spawn_mock_with(many()).await;
    let start = window_end() - Duration::from_secs(6 * 3600);
    let end = window_end() - Duration::from_secs(3600);
    let (start_text, end_text) = (start.format(&Rfc3339).unwrap(), end.format(&Rfc3339).unwrap());
    let page = mock.list(&[("start_time", &start_text), ("end_time", &end_text)]).await;
    let expected: Vec<&str> = mock
        .running
        .conversations()
        .iter()
        .filter(|c| c.environment == "live" && c.started_at >= start && c.started_at < end)
        .map(|c| c.id.as_str())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(ids_of(&page), expected);

    let sandbox = mock.list(&[("client_env", "sandbox")]).await;
    let conversations = sandbox["conversations"].as_array().unwrap();
    assert!(!conversations.is_empty());
    assert!(conversations.iter().all(|c| c["environment"] == "sandbox"));
    let live = mock.list(&[]).await;
    assert!(live["conversations"].as_array().unwrap().iter().all(|c| c["environment"] == "live"));
}

#[tokio::test]
async fn out_of_range_limits_and_malformed_cursors_get_a_400_envelope() {
    let mock = spawn_mock().await;
    for limit in ["0", "1001", "ten"] {
        let response = mock.get(&mock.list_url(&[("limit", limit)])).await;
        assert_envelope(response, 400, "CONVERSATIONS_VALIDATION_FAILED").await;
    }
    let response = mock.get(&mock.v3("?cursor=not-a-cursor")).await;
    assert_envelope(response, 400, "CONVERSATIONS_VALIDATION_FAILED").await;

    // A cursor only continues the listing it came from.
    let cursor = mock.list(&[("limit", "5")]).await["cursor"].as_str().unwrap().to_owned();
    let response = mock.get(&mock.v3(&format!("?cursor={cursor}&client_env=sandbox"))).await;
    assert_envelope(response, 400, "CONVERSATIONS_VALIDATION_FAILED").await;
    let response = mock.get(&mock.v3("?start_time=yesterday")).await;
    assert_envelope(response, 400, "GET_CONVERSATIONS_FILTER_PARSE_ERROR").await;
}

#[tokio::test]
async fn a_conversation_by_id_has_the_v3_shape_and_an_unknown_id_is_404() {
    let mock = spawn_mock().await;
    let fixture: Value = serde_json::from_str(include_str!("../../fixtures/conversation-v3.json")).unwrap();
    let wanted = mock.running.conversations().iter().find(|c| !c.turns.is_empty()).unwrap();
    let response = mock.get(&mock.v3(&format!("/{}", wanted.id))).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-polyai-correlation-id"));
    let body: Value = response.json().await.unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<HashSet<_>>();
    assert_eq!(keys(&body), keys(&fixture), "the fixture's fields, no more, no less");
    assert!(keys(&body["turns"][0]).is_superset(&keys(&fixture["turns"][0])));
    assert_eq!(body["id"], wanted.id.as_str());
    assert!(time::OffsetDateTime::parse(body["started_at"].as_str().unwrap(), &Rfc3339).is_ok());

    let response = mock.get(&mock.v3("/CA00000000000000000000000000000000")).await;
    assert_envelope(response, 404, "CONVERSATIONS_NOT_FOUND").await;
}

#[tokio::test]
async fn hidden_transcripts_report_turns_but_carry_none() {
    let mock = spawn_mock_with(many()).await;
    let hidden = mock.running.conversations().iter().find(|c| c.transcript_hidden()).expect("one is hidden");
    let body: Value = mock.get(&mock.v3(&format!("/{}", hidden.id))).await.json().await.unwrap();
    assert!(body["num_turns"].as_u64().unwrap() > 0);
    assert_eq!(body["turns"], serde_json::json!([]));
}

#[tokio::test]
async fn the_agents_route_returns_the_camel_case_detail() {
    let mock = spawn_mock().await;
    let voice = mock.running.conversations().iter().find(|c| c.has_recording()).unwrap();
    let response = mock.get(&mock.agents(&format!("/{}", voice.id))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["conversationId"], voice.id.as_str());
    assert_eq!(body["accountId"], DEFAULT_ACCOUNT_ID);
    assert_eq!(body["projectId"], DEFAULT_PROJECT_ID);
    assert_eq!(body["channel"], "VOICE-SIP");
    assert!(body["startedAt"].is_string() && body["finishedAt"].is_string());
    assert!(body["turns"].is_array());
    let audio_url = body["audioUrl"].as_str().unwrap();
    assert_eq!(mock.get(audio_url).await.status(), 200, "audioUrl points at the recording");
}

#[tokio::test]
async fn another_account_or_project_is_404_project_not_found() {
    let mock = spawn_mock().await;
    let id = &mock.running.conversations()[0].id;
    for path in [
        format!("/v3/ws-other/{DEFAULT_PROJECT_ID}/conversations"),
        format!("/v3/{DEFAULT_ACCOUNT_ID}/PROJECT-OTHER/conversations/{id}"),
        format!("/v1/agents/PROJECT-OTHER/conversations/{id}"),
    ] {
        assert_envelope(mock.get(&mock.url(&path)).await, 404, "PROJECT_NOT_FOUND").await;
    }
}

#[tokio::test]
async fn the_same_seed_serves_the_same_list_and_another_seed_does_not() {
    let first = spawn_mock_with(MockConfig { seed: 7, ..config() }).await;
    let second = spawn_mock_with(MockConfig { seed: 7, ..config() }).await;
    let other = spawn_mock_with(MockConfig { seed: 8, ..config() }).await;
    let body = |mock: &super::TestMock| {
        let url = mock.v3("");
        let request = mock.http.get(url).header("x-api-key", KEY);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let (a, b, c) = (body(&first).await, body(&second).await, body(&other).await);
    assert_eq!(a, b, "byte for byte");
    assert_ne!(a, c);
}

#[tokio::test]
async fn the_relays_own_client_fetches_from_the_mock() {
    let mock = spawn_mock().await;
    let client = mock.relay_client();
    let id = &mock.running.conversations()[3].id;
    let body: Value = serde_json::from_slice(&client.conversation(id).await.unwrap()).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert!(client.probe().await.is_ok());
}
