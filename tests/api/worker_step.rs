//! Taking events one at a time (the worker's single step, and what drains a queue), on both
//! backends: an event taken and acked is gone for good; one dropped unsettled comes back.

use std::collections::HashSet;

use polyai_relay::queue::Message;

use crate::{
    backend::both_backends,
    helpers::{completed, spawn_app_with, Options},
};

fn conversation_id(event: &Message) -> String {
    let body: serde_json::Value = serde_json::from_slice(&event.body).expect("event is JSON");
    body["data"]["conversation_id"].as_str().expect("a conversation id").to_owned()
}

both_backends! {
    async fn events_taken_and_acked_one_at_a_time_are_never_handed_out_again(backend: Backend) {
        let app = spawn_app_with(Options { backend, worker: false, ..Options::default() }).await;
        let ids: HashSet<String> = (0..100).map(|i| format!("CAstep{i}")).collect();
        for id in &ids {
            assert_eq!(app.post_signed(&completed(id)).await.status(), 204, "{id}");
        }
        let taken: Vec<String> = app.take_raw_events().await.iter().map(conversation_id).collect();
        assert_eq!(taken.len(), ids.len(), "each event once: {taken:?}");
        assert_eq!(taken.into_iter().collect::<HashSet<_>>(), ids);
    }

    async fn an_event_taken_and_dropped_unsettled_is_handed_out_again(backend: Backend) {
        let app = spawn_app_with(Options { backend, worker: false, ..Options::default() }).await;
        assert_eq!(app.post_signed(&completed("CAdropped")).await.status(), 204);
        let first = app.take_raw_event().await.expect("the event is ready");
        assert!(!first.redelivered);
        let message_id = first.message.message_id.clone();
        drop(first);

        // Back in the queue, ready for the next step.
        app.queue.wait_for_pending(1).await;
        let again = app.take_raw_event().await.expect("handed out again");
        assert_eq!(again.message.message_id, message_id);
        assert!(again.redelivered);
        again.acker.ack().await.expect("ack");
        assert!(app.take_raw_event().await.is_none(), "acked, it is gone");
    }
}
