//! `/healthz`, `/readyz` (`/metrics` is on its own listener: `crate::metrics::router`).

use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use pipeline::topics;
use schemas::TenantId;
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    pub status: &'static str,
}

/// Which backends answered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub store: bool,
    pub topics: bool,
    /// The shared state (Redis in the distributed deployment).
    pub state: bool,
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready when the store and the shared state answer a read and the topics an offset query.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "Store, topics and shared state usable", body = Readiness), (status = 503, description = "A backend does not answer", body = Readiness)))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    let ready = check_backends(&state).await;
    let status =
        if ready.store && ready.topics && ready.state { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ready))
}

/// One cheap read on each backend: whether this process reaches it now.
pub(crate) async fn check_backends(state: &AppState) -> Readiness {
    let store = state.store.get_tenant(TenantId(0)).await.is_ok();
    let topics = state.topics.end_offset(topics::SENDS.name(), 0).await.is_ok();
    let shared = state.state.campaign_status(TenantId(0), schemas::CampaignId(0)).await.is_ok();
    Readiness { store, topics, state: shared }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}
