//! Looking again and again, for what a test cannot be told: the state of another process (a
//! relay binary, a `dead replay` run, a RabbitMQ node) or a count only the broker keeps. What
//! happens in the test's own process is awaited instead: a watch, a notification, a consumer, a
//! driven worker step.

use std::{future::Future, time::Duration};

/// Between two looks: often enough that a test sees a change soon after it happens (a kill
/// meant to land mid-way lands there), rarely enough not to load what is looked at.
const BETWEEN_LOOKS: Duration = Duration::from_millis(20);

/// Looks until `look` answers `Ok`, and returns what it holds. `Err` says what it saw instead;
/// the last one fails the test once `limit` has passed.
pub async fn poll_until<T, F>(limit: Duration, mut look: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match look().await {
            Ok(found) => return found,
            Err(seen) if tokio::time::Instant::now() >= deadline => panic!("after {limit:?}: {seen}"),
            Err(_) => tokio::time::sleep(BETWEEN_LOOKS).await,
        }
    }
}
