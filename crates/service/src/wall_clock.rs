//! The wall clock in unix milliseconds: for times that travel between processes in a message's
//! headers (a reserved turn, when an event's calls failed), where tokio's clock means nothing.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}
