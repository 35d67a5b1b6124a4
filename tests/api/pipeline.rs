//! End to end: signed POST → raw event → worker → enriched record, on both backends.

use polyai_relay::{config::EventTypes, signature::sign, worker::Settle};
use serde_json::{json, Value};

use crate::{
    backend::{both_backends, Backend},
    fake_polyai::{conversation, Reply, API_KEY},
    helpers::{completed, header, now, spawn_app_with, Options, SECRET},
};

fn on(backend: Backend) -> Options {
    Options { backend, ..Options::default() }
}

/// The worker is driven step by step: each event is processed when the test says so.
fn driven(backend: Backend) -> Options {
    Options { backend, drive_worker: true, ..Options::default() }
}

both_backends! {
    async fn a_pretty_printed_webhook_becomes_a_record_that_reads_whole(backend: Backend) {
        let app = spawn_app_with(on(backend)).await;
        // The record carries the body as it came: on the embedded queue a record is a line of
        // conversations.jsonl, which its line breaks would split.
        let body = "{\n  \"type\": \"conversation.completed\",\n  \"data\": {\"conversation_id\": \"CApretty\"}\n}";
        assert_eq!(app.post_signed(body).await.status(), 204);
        let record = app.next_record().await;
        assert_eq!(record.json["conversation"]["id"], "CApretty");
        assert_eq!(record.json["event"]["data"]["conversation_id"], "CApretty");
    }

    async fn a_signed_event_becomes_an_enriched_record(backend: Backend) {
        let mut app = spawn_app_with(on(backend)).await;
        let body = r#"{"type":"conversation.completed","data":{"conversation_id":"CA7f3e","environment":"live"}}"#;
        let ts = now().to_string();
        let signature = sign(SECRET.as_bytes(), Some(&ts), body.as_bytes());
        let headers =
            [("x-polyai-timestamp", ts.as_str()), ("x-polyai-signature", &signature), ("x-polyai-event-id", "evt_e2e")];
        assert_eq!(app.post(body, &headers).await.status(), 204);

        let record = app.next_record().await;
        let json = &record.json;
        assert_eq!(json["schema"], "polyai-relay.enriched/1");
        assert_eq!(json["event_id"], "evt_e2e");
        assert_eq!(json["event_type"], "conversation.completed");
        assert_eq!(json["event"], serde_json::from_str::<Value>(body).unwrap(), "the webhook body, untouched");
        assert_eq!(json["conversation"], conversation("CA7f3e"), "the API's answer, untouched");
        assert_eq!(json["transcript_visible"], true);
        assert_eq!(json["audio"], Value::Null);
        assert!(json["received_at"].is_string() && json["fetched_at"].is_string());

        if let Some(delivery) = &record.delivery {
            assert_eq!(delivery.routing_key.as_str(), "conversation.completed");
            let p = &delivery.properties;
            assert_eq!(p.message_id().as_ref().unwrap().as_str(), "evt_e2e");
            assert_eq!(p.kind().as_ref().unwrap().as_str(), "conversation.completed");
            assert_eq!(p.content_type().as_ref().unwrap().as_str(), "application/json");
            assert_eq!(*p.delivery_mode(), Some(2));
            assert_eq!(p.app_id().as_ref().unwrap().as_str(), "polyai-relay");
            assert_eq!(header(delivery, "x-relay-signature-scheme").as_deref(), Some("timestamped"));
            assert_eq!(header(delivery, "x-relay-attempts"), None);
        }

        let requests = app.polyai.by_id_requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].path, "/v3/ws-test/PROJECT-TEST/conversations/CA7f3e");
        assert_eq!(requests[0].api_key.as_deref(), Some(API_KEY));
        // Nothing is left behind, not even unacked: the input was acked after the record was stored.
        app.begin_shutdown();
        app.stopped().await;
        app.queue.assert_nothing_left().await;
    }

    async fn a_handoff_is_enriched_and_an_alert_passes_through_without_a_conversation(backend: Backend) {
        let app = spawn_app_with(Options { event_types: EventTypes::All, ..driven(backend) }).await;
        let handoff = r#"{"type":"handoff.created","data":{"conversation_id":"CAh1","handoff_reason":"asked for a person"}}"#;
        assert_eq!(app.post_signed(handoff).await.status(), 204);
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        let record = app.next_record().await;
        assert_eq!(record.json["event_type"], "handoff.created");
        assert_eq!(record.json["conversation"]["id"], "CAh1");

        let alert = r#"{"event_type":"alerts.triggered","alert":{"id":"ar_1"}}"#;
        assert_eq!(app.post_signed(alert).await.status(), 204);
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        let record = app.next_record().await;
        assert_eq!(record.json["event_type"], "alerts.triggered");
        assert_eq!(record.json["conversation"], Value::Null);
        assert_eq!(record.json["event"]["alert"]["id"], "ar_1");
        assert_eq!(app.polyai.by_id_requests().len(), 1, "an alert needs no API call");
    }

    async fn a_conversation_with_its_transcript_switched_off_is_flagged(backend: Backend) {
        let app = spawn_app_with(driven(backend)).await;
        let hidden: Value =
            serde_json::from_str(include_str!("../fixtures/conversation-v3-transcript-hidden.json")).unwrap();
        app.polyai.script([Reply::Json(hidden.clone())]);
        assert_eq!(app.post_signed(&completed("CAhidden")).await.status(), 204);
        assert_eq!(app.process_next(1).await, [Settle::Ack]);
        let record = app.next_record().await;
        assert_eq!(record.json["transcript_visible"], false);
        assert_eq!(record.json["conversation"], hidden);
    }

    async fn a_conversation_event_without_a_conversation_id_is_dead_lettered(backend: Backend) {
        let app = spawn_app_with(driven(backend)).await;
        let body = json!({"type": "conversation.completed", "data": {"environment": "live"}}).to_string();
        assert_eq!(app.post_signed(&body).await.status(), 204);
        assert_eq!(app.process_next(1).await, [Settle::Ack], "dead-lettered, then acked");
        assert!(app.drain_worker().await.is_empty(), "nothing comes back");
        let dead = app.next_dead_letter().await;
        assert_eq!(dead.error.as_deref(), Some("event has no data.conversation_id"));
        assert_eq!(dead.event, body.as_bytes());
        assert!(app.polyai.requests().is_empty());
    }
}
