//! `/healthz`, `/readyz`, `/metrics`.

use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use pipeline::topics;
use schemas::TenantId;
use serde_json::json;
use std::sync::Arc;

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a read and the topics answer an offset query.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "Store and topics usable"), (status = 503, description = "Not ready")))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    let store = state.store.get_tenant(TenantId(0)).await.is_ok();
    let topics = state.topics.end_offset(topics::SENDS.name(), 0).await.is_ok();
    let status = if store && topics { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"store": store, "topics": topics})))
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render_live(&state).await)
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}
