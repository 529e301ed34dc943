//! Herald's control plane: a slim axum API over the same store and topics the pipeline uses.
//!
//! # Layout
//! - [`error`]: `ApiError` → `{"error": {"code", "message"}}` with stable codes.
//! - [`auth`]: JWT bearer auth (`Caller` extractor, roles).
//! - [`idempotency`]: `Idempotency-Key` replay for creates and sends.
//! - [`routes`]: one `routes()` per resource, merged in [`router`].
//! - [`metrics`]: Prometheus text exposition (HTTP, stages, reconcile).
//! - [`trace`]: HTTP spans and `traceparent` injection into produced records.
//! - [`openapi`]: the OpenAPI document (utoipa) at `/openapi.json`, Swagger UI at `/docs`.
//!
//! It is not: the pipeline. Sends become records on `campaign.sends`; pause/resume/cancel are
//! status changes the stages observe (see `stages::control`).

pub mod auth;
pub mod error;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod trace;
pub mod validate;

use pipeline::TopicBackend;
use std::sync::Arc;
use storage::Store;

pub use auth::{Auth, Caller, Claims, Role};
pub use error::{ApiError, ApiResult};

/// Everything a handler may touch.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub topics: Arc<dyn TopicBackend>,
    pub auth: Auth,
    pub metrics: metrics::Metrics,
    pub progress: routes::campaigns::ProgressRates,
    /// Seals and opens provider secrets.
    pub secrets: storage::secrets::SecretKey,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        topics: Arc<dyn TopicBackend>,
        auth: Auth,
        metrics: metrics::Metrics,
        secrets: storage::secrets::SecretKey,
    ) -> Arc<Self> {
        Arc::new(Self { store, topics, auth, metrics, progress: Default::default(), secrets })
    }
}

/// JSON request bodies above this are refused with 413 (CSV import has its own limit).
pub const JSON_BODY_LIMIT: usize = 1 << 20;

/// The whole API.
pub fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .merge(routes::tenants::routes())
        .merge(routes::providers::routes())
        .merge(routes::templates::routes())
        .merge(routes::audiences::routes())
        .merge(routes::suppressions::routes())
        .merge(routes::campaigns::routes())
        .merge(routes::dlq::routes())
        .merge(routes::webhooks::routes())
        .merge(routes::sms_callbacks::routes())
        .merge(routes::ops::routes())
        .merge(openapi::routes())
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::extract::DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(axum::middleware::from_fn(trace::span))
        .with_state(state)
}
