//! Asking the API again the call it refused a key for, to learn whether the key works again.
//!
//! The same call, not a cheaper one: a key can be allowed one call and refused another (the
//! list but not the Agents API's by-id; conversations but not recordings), and a probe of an
//! allowed call would resume a project only for it to be paused again at once, over and over.

use super::{ApiError, AudioRequest, PolyaiClient};

/// An API call a project's key was refused for.
#[derive(Debug, Clone)]
pub enum KeyedCall {
    Conversation { conversation_id: String },
    Recording { conversation_id: String, request: AudioRequest },
}

impl PolyaiClient {
    /// Makes `call` again; `Ok` when the API answered it.
    pub async fn ask_again(&self, call: &KeyedCall) -> Result<(), ApiError> {
        match call {
            KeyedCall::Conversation { conversation_id } => self.conversation(conversation_id).await.map(drop),
            // The answer's status is enough: its body, a whole recording, is never read.
            KeyedCall::Recording { conversation_id, request } => self.audio(conversation_id, *request).await.map(drop),
        }
    }
}
