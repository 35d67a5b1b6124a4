//! Fault injection (`--latency`, `--rate-429`, `--rate-5xx`, or a tenant's own): the answers a
//! client's retry table is for. `--not-found-until` lives with the by-id handlers, which know
//! the conversation. `auth` applies these once it knows the request's tenant.

use std::time::Duration;

use super::{config::Faults, error::Failure};

/// Waits `latency` before answering, whatever the answer.
pub async fn delay(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// A 429 or 503 to answer instead of passing the request on, at the configured rates.
pub fn injected(faults: &Faults) -> Option<Failure> {
    // `random()` is in [0, 1): a rate of 1 always fires, 0 never.
    if faults.rate_429 > 0.0 && rand::random::<f64>() < faults.rate_429 {
        let retry_after_secs = faults.retry_after.as_secs() + u64::from(faults.retry_after.subsec_nanos() > 0);
        return Some(Failure::RateLimited { retry_after_secs });
    }
    if faults.rate_5xx > 0.0 && rand::random::<f64>() < faults.rate_5xx {
        return Some(Failure::Unavailable);
    }
    None
}
