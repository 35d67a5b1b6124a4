//! Every way a webhook is turned away, as one enum with its status code (design §3).
//! Bodies stay empty: a sender learns the status, the operator reads the log and metrics.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{event::EventError, queue::PublishError, signature::VerifyError};

/// Seconds a sender should wait before retrying a 503. PolyAI's schedule is its own, but other
/// senders (and load balancers) read it.
const RETRY_AFTER_SECONDS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("signature refused: {0}")]
    Unauthorized(VerifyError),
    #[error("verified body refused: {0}")]
    BadRequest(EventError),
    #[error("body larger than the limit")]
    TooLarge,
    #[error("body could not be read: {0}")]
    UnreadableBody(String),
    #[error("body not received in time")]
    SlowBody,
    #[error("too many requests in flight")]
    Overloaded,
    /// The bodies being read hold all the memory they may (`RELAY_BODY_MEMORY`).
    #[error("the memory for request bodies is spent")]
    BodyMemoryFull,
    /// The body held some of `RELAY_BODY_MEMORY` a while, still arriving, and a newer one needed it.
    #[error("the memory this body held was needed by a newer one")]
    BodyCut,
    /// Its connection was evicted at the connection cap while the body was read: no one would
    /// read an answer.
    #[error("the connection was closed to make room for another")]
    Evicted,
    /// A copy of a delivery another request is storing right now. Not `duplicate` (204) yet:
    /// that store may still fail. Retried, it is a duplicate, or stored if the first was not.
    #[error("a copy of this delivery is being stored; its outcome is not known yet")]
    CopyInFlight,
    #[error("not durably enqueued: {0}")]
    Unavailable(PublishError),
    #[error("not durably enqueued before the deadline")]
    DeadlineExceeded,
    #[error("the broker is unavailable and the spool is full")]
    SpoolFull,
    #[error("the broker is unavailable and the spool cannot be written: {0}")]
    SpoolFailed(String),
}

impl Rejection {
    /// Label for the requests metric and the log's `outcome`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::BadRequest(_) | Self::UnreadableBody(_) => "bad_request",
            Self::TooLarge => "too_large",
            Self::SlowBody => "timeout",
            Self::Overloaded => "overloaded",
            Self::BodyMemoryFull => "body_memory_full",
            Self::BodyCut => "body_cut",
            Self::Evicted => "evicted",
            Self::CopyInFlight => "duplicate_in_flight",
            Self::Unavailable(_) | Self::DeadlineExceeded | Self::SpoolFailed(_) => "unavailable",
            Self::SpoolFull => "spool_full",
        }
    }

    /// What the rate limit on "webhook refused" lines tells apart: each kind of refusal, finer than
    /// [`Self::outcome`], so that a flood of one kind never hides a line of another. Above all, a
    /// signed event refused (PolyAI does not send it again) is never hidden by bodies anyone can
    /// send unreadable, nor a spool's disk error by the broker's deadlines.
    pub fn log_kind(&self) -> &'static str {
        match self {
            Self::Unauthorized(reason) => reason.reason(),
            Self::BadRequest(_) => "verified_body_refused",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::Unavailable(_) => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::SpoolFailed(_) => "spool_failed",
            other => other.outcome(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) | Self::UnreadableBody(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // 408 is retried by PolyAI, like the 503s below.
            Self::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded
            | Self::BodyMemoryFull
            | Self::BodyCut
            | Self::Evicted
            | Self::CopyInFlight
            | Self::Unavailable(_)
            | Self::DeadlineExceeded
            | Self::SpoolFull
            | Self::SpoolFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = status.into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}
