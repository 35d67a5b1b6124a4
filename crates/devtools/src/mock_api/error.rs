//! Every error the mock answers, in PolyAI's current envelope (polyai-api.md §5), and the
//! `X-PolyAI-Correlation-Id` header that every response carries.

use axum::{
    extract::Request,
    http::{header, HeaderName, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-polyai-correlation-id");

/// Why a request failed; the variant picks the status and `error_code`, the text is `error_message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    #[error("The API key is missing or not valid for this resource.")]
    Unauthorised,
    /// A valid key on another project's path: v3 keys are project-scoped, platform keys account-scoped.
    #[error("The API key has no access to project {0}.")]
    Forbidden(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    FilterParse(String),
    #[error("Request failed schema validation: {0}")]
    Schema(String),
    #[error("{0}")]
    InvalidId(String),
    #[error("Conversation {0} not found.")]
    ConversationNotFound(String),
    #[error("Recording not found for conversation {0}.")]
    RecordingNotFound(String),
    #[error("Project {0} not found.")]
    ProjectNotFound(String),
    #[error("Webhook endpoint {0} not found.")]
    EndpointNotFound(String),
    /// The mock's own control routes (`/_mock/tenants/{name}`), not PolyAI's.
    #[error("No tenant named {0}.")]
    TenantNotFound(String),
    #[error("The account already has {0} webhook endpoints, the most it may have.")]
    EndpointLimit(usize),
    #[error("Rate limit exceeded. Retry after the period indicated in the response headers.")]
    RateLimited { retry_after_secs: u64 },
    #[error("The service is temporarily unavailable.")]
    Unavailable,
    #[error("{0}")]
    NotImplemented(String),
    #[error("No such route.")]
    RouteNotFound,
    #[error("Method not allowed.")]
    MethodNotAllowed,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorised => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Validation(_) | Self::FilterParse(_) | Self::Schema(_) => StatusCode::BAD_REQUEST,
            Self::InvalidId(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ConversationNotFound(_)
            | Self::RecordingNotFound(_)
            | Self::ProjectNotFound(_)
            | Self::EndpointNotFound(_)
            | Self::TenantNotFound(_)
            | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::EndpointLimit(_) => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The documented codes where the docs have one; plain names where they have none.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorised => "AUTH_USER_UNAUTHORISED",
            Self::Forbidden(_) => "USER_ACCESS_FORBIDDEN",
            Self::Validation(_) => "CONVERSATIONS_VALIDATION_FAILED",
            Self::FilterParse(_) => "GET_CONVERSATIONS_FILTER_PARSE_ERROR",
            Self::Schema(_) => "SCHEMA_VALIDATION_FAILED",
            Self::InvalidId(_) => "INVALID_ID",
            Self::ConversationNotFound(_) => "CONVERSATIONS_NOT_FOUND",
            Self::RecordingNotFound(_) => "CONVERSATIONS_RECORDING_NOT_FOUND",
            Self::ProjectNotFound(_) => "PROJECT_NOT_FOUND",
            Self::EndpointNotFound(_) => "WEBHOOK_ENDPOINT_NOT_FOUND",
            Self::TenantNotFound(_) => "TENANT_NOT_FOUND",
            Self::EndpointLimit(_) => "WEBHOOK_ENDPOINT_LIMIT_REACHED",
            Self::RateLimited { .. } => "RATE_LIMIT_EXCEEDED",
            Self::Unavailable => "SERVICE_UNAVAILABLE",
            Self::NotImplemented(_) => "NOT_IMPLEMENTED",
            Self::RouteNotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.status();
        let error_id = uuid::Uuid::new_v4().to_string();
        let message = self.to_string();
        let body = json!({
            "success": false,
            "error": message,
            "error_id": error_id,
            "error_code": self.code(),
            "error_message": message,
            "data": null,
        });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&error_id) {
            headers.insert(CORRELATION_ID, value);
        }
        if let Self::RateLimited { retry_after_secs } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// Gives every response a correlation id; errors already carry theirs, equal to `error_id`.
pub async fn correlate(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key(CORRELATION_ID) {
        if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            response.headers_mut().insert(CORRELATION_ID, value);
        }
    }
    response
}

pub async fn route_not_found() -> Failure {
    Failure::RouteNotFound
}

pub async fn method_not_allowed() -> Failure {
    Failure::MethodNotAllowed
}
