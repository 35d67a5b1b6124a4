//! Reading an answer with a size cap (design §10): an answer over the cap is a permanent error
//! for the event that asked, never buffered whole and never retried.

use bytes::{Bytes, BytesMut};
use reqwest::Response;

use super::{transport_detail, ApiError};

/// Error answers are read for a log line only.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 << 10;

/// The body of `response`, or [`ApiError::Unusable`] as soon as it passes `limit` bytes.
pub(crate) async fn read_capped(mut response: Response, limit: usize) -> Result<Bytes, ApiError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ApiError::Transport(transport_detail(&e)))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::Unusable { detail: format!("the answer is larger than {limit} bytes (RELAY_API_MAX_RESPONSE)") }
}
