//! Herald's control plane: a slim axum API over the same store and topics the pipeline uses.
//!
//! # Layout
//! - [`error`]: `ApiError` → `{"error": {"code", "message"}}` with stable codes.
//! - [`auth`]: JWT bearer auth (`Caller` extractor, roles).
//! - [`idempotency`]: `Idempotency-Key` replay for creates and sends.
//! - [`routes`]: one `routes()` per resource, merged in [`router`].
//! - [`metrics`]: Prometheus text exposition (HTTP, stages, reconcile).
//! - [`trace`]: HTTP spans and `traceparent` injection into produced records.
//! - [`console`]: the operator console at `/console` (session cookie, embedded assets).
//! - [`openapi`]: the OpenAPI document (utoipa) at `/openapi.json`, Swagger UI at `/docs`.
//!
//! It is not: the pipeline. Sends become records on `campaign.sends`; pause/resume/cancel are
//! status changes the stages observe (see `stages::control`).

pub mod auth;
pub mod console;
pub mod error;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod trace;
pub mod validate;

use pipeline::TopicBackend;
use std::sync::Arc;
use storage::{SharedState, Store};

pub use auth::{Auth, Caller, Claims, Role};
pub use error::{ApiError, ApiResult};

/// Operator settings the API applies (never tenant input).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long `Idempotency-Key` responses are replayed.
    pub idempotency_ttl: std::time::Duration,
    /// Which addresses tenant provider settings may point at.
    pub addresses: stages::deliver::providers::address::AddressPolicy,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { idempotency_ttl: std::time::Duration::from_secs(24 * 3_600), addresses: Default::default() }
    }
}

/// Everything a handler may touch.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Ids, idempotency reservations, quota waits, stopped senders (shared by every process).
    pub state: Arc<dyn SharedState>,
    pub topics: Arc<dyn TopicBackend>,
    pub auth: Auth,
    pub metrics: metrics::Metrics,
    pub progress: routes::campaigns::ProgressRates,
    /// Open event streams per tenant (bounded).
    pub streams: routes::events::Streams,
    /// Seals and opens provider secrets.
    pub secrets: storage::secrets::SecretKey,
    /// The one owner of campaign status changes and tenant deletion.
    pub lifecycle: stages::lifecycle::Lifecycle,
    pub idempotency_ttl: std::time::Duration,
    pub addresses: stages::deliver::providers::address::AddressPolicy,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        state: Arc<dyn SharedState>,
        topics: Arc<dyn TopicBackend>,
        auth: Auth,
        metrics: metrics::Metrics,
        secrets: storage::secrets::SecretKey,
        config: ApiConfig,
    ) -> Arc<Self> {
        let lifecycle = stages::lifecycle::Lifecycle::new(store.clone(), state.clone(), topics.clone());
        Arc::new(Self {
            store,
            state,
            topics,
            auth,
            metrics,
            progress: Default::default(),
            streams: Default::default(),
            secrets,
            lifecycle,
            idempotency_ttl: config.idempotency_ttl,
            addresses: config.addresses,
        })
    }
}

/// A typed response as JSON (for `idempotency::once`, which stores the bytes it replays).
pub(crate) fn to_value<T: serde::Serialize>(value: T) -> ApiResult<serde_json::Value> {
    serde_json::to_value(value).map_err(ApiError::internal)
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
        .merge(routes::events::routes())
        .merge(routes::senders::routes())
        .merge(routes::messages::routes())
        .merge(routes::timeline::routes())
        .merge(routes::dlq::routes())
        .merge(routes::webhooks::routes())
        .merge(routes::sms_callbacks::routes())
        .merge(routes::ops::routes())
        .merge(openapi::routes())
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::extract::DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(axum::middleware::from_fn(trace::span))
        .with_state(state)
}

/// An `AppState` on fresh embedded backends in `dir`, for this crate's unit tests.
#[cfg(test)]
pub(crate) fn test_state(dir: &std::path::Path) -> Arc<AppState> {
    let store = Arc::new(storage::EmbeddedStore::open(&dir.join("s"), Default::default()).unwrap());
    let topics = pipeline::EmbeddedTopics::open(&dir.join("t"), &pipeline::topics::all(), Default::default()).unwrap();
    let secrets = storage::secrets::SecretKey::from_bytes(&[1; 32]).unwrap();
    let shared = Arc::new(storage::EmbeddedState::new(store.clone()));
    AppState::new(store, shared, topics, Auth::hs256(b"k"), Default::default(), secrets, Default::default())
}
