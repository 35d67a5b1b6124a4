//! A connection of its own for the relay's tools and loops (dead letters, reconciliation): the
//! topology declared, and a channel in confirm mode. One place, so how the relay reaches the
//! broker changes here only.

use lapin::{options::ConfirmSelectOptions, Channel, Connection};

use super::{connect, describe, topology};
use crate::config::{AmqpTarget, Topology};

/// Connects as `role` (shown in the management UI) to the first of `target`'s addresses that
/// answers, declares the topology, and opens a confirm-mode channel. Errors name hosts, never URLs.
pub async fn open_confirmed(
    target: &AmqpTarget,
    topology: &Topology,
    role: &str,
) -> Result<(Connection, Channel), String> {
    let connection = connect(target, role).await?;
    // Declared as the relay declares it, so a first run on a new broker finds every queue.
    topology::declare(&connection, topology)
        .await
        .map_err(|e| format!("declaring the topology failed: {}", describe(&e)))?;
    let channel = connection.create_channel().await.map_err(|e| describe(&e))?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| describe(&e))?;
    Ok((connection, channel))
}
