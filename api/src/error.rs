//! The one API error type: a status, a stable snake_case `code` and a message, rendered as
//! `{"error": {"code", "message"}}`. 5xx bodies are generic; the real error is logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra machine-readable fields beside `code` and `message` (e.g. `imported_before_error`).
    pub details: serde_json::Map<String, serde_json::Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: serde_json::Map::new() }
    }

    /// Replaces the code (keeping the status).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Adds a field to the error object.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// Missing, or belonging to another tenant: indistinguishable on purpose.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        tracing::warn!(%error, "dependency unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "temporarily unavailable; retry")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = self.details;
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

impl From<storage::Error> for ApiError {
    fn from(e: storage::Error) -> Self {
        match e {
            storage::Error::NotFound { what, .. } => ApiError::not_found(what),
            storage::Error::SenderTaken { .. } => ApiError::conflict("sender_taken", e.to_string()),
            storage::Error::Invalid { code, message } => ApiError::unprocessable(code, message),
            other => ApiError::unavailable(other),
        }
    }
}

impl From<stages::lifecycle::LifecycleError> for ApiError {
    fn from(e: stages::lifecycle::LifecycleError) -> Self {
        use stages::lifecycle::LifecycleError as E;
        match e {
            E::NotFound => ApiError::not_found("campaign"),
            E::Illegal { .. } => ApiError::conflict("illegal_transition", e.to_string()),
            E::Conflict { .. } => ApiError::conflict("campaign_changed", e.to_string()),
            E::Store(e) => e.into(),
            E::Pipeline(e) => e.into(),
        }
    }
}

impl From<pipeline::Error> for ApiError {
    fn from(e: pipeline::Error) -> Self {
        ApiError::unavailable(e)
    }
}

/// Parses a JSON body with a clear 400 (syntax) or 422 (shape) on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable("invalid_body", e.to_string()),
        _ => ApiError::bad_request("malformed_json", e.to_string()),
    })
}

/// Parses an id from a path segment; anything unparsable is simply not found.
pub fn parse_id(raw: &str, what: &str) -> ApiResult<u64> {
    raw.parse().map_err(|_| ApiError::not_found(what))
}

/// The body of every error response (the schema in the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// An error: a stable machine-readable `code`, a message for people, and for some codes one
/// more field.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case (e.g. `not_found`, `forbidden_field`, `address_not_allowed`).
    pub code: String,
    pub message: String,
    /// The request field at fault (`forbidden_field`, `null_not_allowed`, `template_too_large`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Rows a CSV import committed before a fatal error stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_before_error: Option<u64>,
}
