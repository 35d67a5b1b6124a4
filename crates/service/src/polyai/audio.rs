//! The recording of a voice conversation, as a response to stream to disk.

use reqwest::Response;

use super::{ApiError, PolyaiClient};
use crate::config::AudioDirection;

#[derive(Debug, Clone, Copy)]
pub struct AudioRequest {
    pub direction: AudioDirection,
    pub redacted: bool,
}

impl PolyaiClient {
    /// `GET …/conversations/{id}/audio`: the WAV, not yet read. A 404 means no recording.
    pub async fn audio(&self, conversation_id: &str, request: AudioRequest) -> Result<Response, ApiError> {
        let (host, mut url) = self.conversation_url(conversation_id, &["audio"]);
        url.query_pairs_mut()
            .append_pair("direction", request.direction.as_str())
            .append_pair("redacted", if request.redacted { "true" } else { "false" });
        // Accept: audio/wav and no Content-Type, as the audio page asks. Through the download
        // client: a long recording takes longer than RELAY_API_TIMEOUT to stream whole.
        self.get_with(&self.downloads, host, url, "audio/wav").await
    }
}
