//! The HTTP clients that carry a PolyAI key.
//!
//! They follow no redirect. On a redirect to another host reqwest drops only `Authorization`,
//! cookies and proxy credentials, so a followed 30x would hand `x-api-key` to whatever the
//! `Location` names, over plain http if it says so. A 3xx comes back as the answer instead, and
//! becomes an error naming where it pointed (see `redirect_detail`).

use std::time::Duration;

use reqwest::redirect::Policy;

/// For JSON calls: the whole call, body included, within `timeout` (`RELAY_API_TIMEOUT`).
pub(crate) fn api_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(keyed_builder().timeout(timeout).build()?)
}

/// For recordings: no total deadline, which a long call's WAV (60 to 115 MB) can outlast on a
/// healthy link, and a body it cut would be retried and cut again. Instead the answer's headers
/// are due within `timeout` of sending (reqwest's read timer runs from the send until they come),
/// then each read of the body within `timeout` of the one before: a download that keeps moving
/// finishes, a stalled one fails and its event is retried.
pub(crate) fn download_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(keyed_builder().read_timeout(timeout).build()?)
}

/// What every key-bearing client shares: no redirects, a bounded connect, the relay's name.
fn keyed_builder() -> reqwest::ClientBuilder {
    crate::http_client::builder()
        .redirect(Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("polyai-relay/", env!("CARGO_PKG_VERSION")))
}
