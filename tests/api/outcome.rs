//! What became of an event: its record or its dead letter, whichever the worker wrote.

use crate::{
    backend::{DeadLetter, Record, TestQueue},
    helpers::TestApp,
};

/// The next record or dead letter, whichever comes first, so that a test expecting one fails at
/// once, with the other's content, when the worker wrote the other. On the embedded queue only:
/// reads of its files can be raced (a read that loses moves no cursor), RabbitMQ's reader cannot.
pub async fn record_or_dead_letter(app: &TestApp) -> Result<Record, DeadLetter> {
    assert!(matches!(app.queue, TestQueue::Embedded { .. }), "only the embedded queue's reads can be raced");
    tokio::select! {
        record = app.next_record() => Ok(record),
        dead = app.next_dead_letter() => Err(dead),
    }
}
