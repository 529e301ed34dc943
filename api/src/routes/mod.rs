//! One module per resource, each exposing `routes()`; merged in `crate::router`.

pub mod audiences;
pub mod campaigns;
pub mod dlq;
pub mod events;
pub mod import;
pub mod messages;
pub mod ops;
pub mod provider_settings;
pub mod providers;
pub mod senders;
pub mod sms_callbacks;
pub mod suppressions;
pub mod templates;
pub mod tenants;
pub mod timeline;
pub mod webhooks;

use crate::error::{ApiError, ApiResult};

/// A page of items with the cursor of the next page (null: the last page).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The largest page a list endpoint returns.
pub const MAX_LIMIT: usize = 1_000;

/// A page size: `limit` as given (1-1000), or 100.
pub fn limit(raw: Option<usize>) -> ApiResult<usize> {
    match raw {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request("invalid_query", format!("limit {n} must be 1-{MAX_LIMIT}"))),
    }
}

/// Parses query parameters with a 400 `invalid_query` on failure.
pub fn query<T>(query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>) -> ApiResult<T> {
    query.map(|q| q.0).map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}
