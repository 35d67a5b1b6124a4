//! A lock between relay processes on one broker: an exclusive queue, which only one connection
//! can hold (another gets RESOURCE_LOCKED) and which the broker drops the moment the holder's
//! connection closes, a crash included. Exclusive queues behave the same on 3.10 and 4.x, and
//! need no plugin.

use lapin::{options::QueueDeclareOptions, types::FieldTable, Channel, Connection};

/// Takes the lock `name` for `connection`: the channel that holds it, or `None` while another
/// connection does.
pub async fn try_hold(connection: &Connection, name: &str) -> lapin::Result<Option<Channel>> {
    let channel = connection.create_channel().await?;
    // exclusive: only this connection may use it, and it goes when the connection does.
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    match channel.queue_declare(name.into(), options, FieldTable::default()).await {
        Ok(_) => Ok(Some(channel)),
        Err(error) if held_elsewhere(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

fn held_elsewhere(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 405)
}
