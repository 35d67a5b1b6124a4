//! End to end on the real broker: signed POST → raw event → worker → enriched record.

use polyai_relay::{config::EventTypes, signature::sign};
use serde_json::{json, Value};

use crate::{
    fake_polyai::{conversation, Reply, API_KEY},
    helpers::{header, now, spawn_app, spawn_app_with, Options, SECRET},
};

#[tokio::test]
async fn a_signed_event_becomes_an_enriched_record_on_the_downstream_queue() {
    let app = spawn_app().await;
    let body = r#"{"type":"conversation.completed","data":{"conversation_id":"CA7f3e","environment":"live"}}"#;
    let ts = now().to_string();
    let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
    let headers =
        [("x-polyai-timestamp", ts.as_str()), ("x-polyai-signature", &signature), ("x-polyai-event-id", "evt_e2e")];
    assert_eq!(app.post(body, &headers).await.status(), 204);

    let (record, delivery) = app.next_record().await;
    assert_eq!(record["schema"], "polyai-relay.enriched/1");
    assert_eq!(record["event_id"], "evt_e2e");
    assert_eq!(record["event_type"], "conversation.completed");
    assert_eq!(record["event"], serde_json::from_str::<Value>(body).unwrap(), "the webhook body, untouched");
    assert_eq!(record["conversation"], conversation("CA7f3e"), "the API's answer, untouched");
    assert_eq!(record["transcript_visible"], true);
    assert_eq!(record["audio"], Value::Null);
    assert!(record["received_at"].is_string() && record["fetched_at"].is_string());

    assert_eq!(delivery.routing_key.as_str(), "conversation.completed");
    let p = &delivery.properties;
    assert_eq!(p.message_id().as_ref().unwrap().as_str(), "evt_e2e");
    assert_eq!(p.kind().as_ref().unwrap().as_str(), "conversation.completed");
    assert_eq!(p.content_type().as_ref().unwrap().as_str(), "application/json");
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(p.app_id().as_ref().unwrap().as_str(), "polyai-relay");
    assert_eq!(header(&delivery, "x-relay-signature-scheme").as_deref(), Some("timestamped"));
    assert_eq!(header(&delivery, "x-relay-attempts"), None);

    let requests = app.polyai.by_id_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v3/ws-test/PROJECT-TEST/conversations/CA7f3e");
    assert_eq!(requests[0].api_key.as_deref(), Some(API_KEY));
    // Nothing is left behind: the input was acked after the record was confirmed.
    app.broker.wait_for_count(&app.broker.topology.enrich_queue, 0).await;
}

#[tokio::test]
async fn a_handoff_is_enriched_and_an_alert_passes_through_without_a_conversation() {
    let app = spawn_app_with(Options { event_types: EventTypes::All, ..Options::default() }).await;
    let handoff =
        r#"{"type":"handoff.created","data":{"conversation_id":"CAh1","handoff_reason":"asked for a person"}}"#;
    assert_eq!(app.post_signed(handoff).await.status(), 204);
    let (record, delivery) = app.next_record().await;
    assert_eq!(delivery.routing_key.as_str(), "handoff.created");
    assert_eq!(record["conversation"]["id"], "CAh1");

    let alert = r#"{"event_type":"alerts.triggered","alert":{"id":"ar_1"}}"#;
    assert_eq!(app.post_signed(alert).await.status(), 204);
    let (record, delivery) = app.next_record().await;
    assert_eq!(delivery.routing_key.as_str(), "alerts.triggered");
    assert_eq!(record["conversation"], Value::Null);
    assert_eq!(record["event"]["alert"]["id"], "ar_1");
    assert_eq!(app.polyai.by_id_requests().len(), 1, "an alert needs no API call");
}

#[tokio::test]
async fn a_conversation_with_its_transcript_switched_off_is_flagged() {
    let app = spawn_app().await;
    let hidden: Value =
        serde_json::from_str(include_str!("../fixtures/conversation-v3-transcript-hidden.json")).unwrap();
    app.polyai.script([Reply::Json(hidden.clone())]);
    assert_eq!(app.post_signed(&crate::helpers::completed("CAhidden")).await.status(), 204);
    let (record, _) = app.next_record().await;
    assert_eq!(record["transcript_visible"], false);
    assert_eq!(record["conversation"], hidden);
}

#[tokio::test]
async fn a_conversation_event_without_a_conversation_id_is_dead_lettered() {
    let app = spawn_app().await;
    let body = json!({"type": "conversation.completed", "data": {"environment": "live"}}).to_string();
    assert_eq!(app.post_signed(&body).await.status(), 204);
    let dead = app.next_dead_letter().await;
    assert_eq!(header(&dead, "x-relay-error").as_deref(), Some("event has no data.conversation_id"));
    assert!(app.polyai.requests().is_empty());
}
