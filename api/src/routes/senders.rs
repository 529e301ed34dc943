//! `GET /v1/senders`: the tenant's senders as this process paces them: configured rate, current
//! rate (after slowing down on the provider's "too fast" answers), stopped, pace signals. Read
//! from the deliver stage's published samples (`pipeline::Board`), so it lists the senders of
//! the deliver stage running in this process: all of them in the embedded deployment; in the
//! distributed deployment an API-only process runs no deliver stage and lists none (each worker
//! exports them on its `/metrics`).

use crate::error::ApiResult;
use crate::{AppState, Caller};
use axum::extract::State;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One sender's pacing.
#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct SenderRate {
    pub provider: String,
    pub sender: String,
    /// Calls per second configured (null: unpaced).
    pub configured_rate_per_s: Option<f64>,
    /// Calls per second now, after slowing down on the provider's pace signals.
    pub current_rate_per_s: Option<f64>,
    /// The provider stopped this sender (an operator must act).
    pub stopped: bool,
    pub pace_signals: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SenderList {
    pub items: Vec<SenderRate>,
}

#[utoipa::path(get, path = "/v1/senders", tag = "senders", responses((status = 200, description = "The tenant's senders paced by this process, with configured and current rates", body = SenderList)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<SenderList>> {
    let tenant = caller.tenant()?.0.to_string();
    let label = |s: &pipeline::Sample, key: &str| s.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
    let mut senders: BTreeMap<(String, String), SenderRate> = BTreeMap::new();
    for s in state.metrics.board.samples() {
        if !s.name.starts_with("herald_sender_") || label(&s, "tenant").as_deref() != Some(tenant.as_str()) {
            continue;
        }
        let (Some(provider), Some(sender)) = (label(&s, "provider"), label(&s, "sender")) else { continue };
        let entry = senders.entry((provider.clone(), sender.clone())).or_insert_with(|| SenderRate {
            provider,
            sender,
            ..Default::default()
        });
        match (s.name, label(&s, "kind").as_deref()) {
            ("herald_sender_rate_per_s", Some("configured")) => entry.configured_rate_per_s = Some(s.value),
            ("herald_sender_rate_per_s", Some("current")) => entry.current_rate_per_s = Some(s.value),
            ("herald_sender_stopped", _) => entry.stopped = s.value > 0.0,
            ("herald_sender_pace_signals_total", _) => entry.pace_signals = s.value as u64,
            _ => {}
        }
    }
    Ok(Json(SenderList { items: senders.into_values().collect() }))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/senders", axum::routing::get(list))
}
