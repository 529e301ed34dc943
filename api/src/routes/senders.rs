//! `GET /v1/senders`: the tenant's senders: configured rate, current rate (after slowing down on
//! the provider's "too fast" answers), stopped, pace signals. Every sender of the tenant's
//! provider settings is listed with its configured rate and whether the provider stopped it
//! (shared state, so true in every process). The current rate and pace signals are the deliver
//! stage's own view, read from its published samples (`pipeline::Board`): present where this
//! process paces the sender (`paced_here`; every sender in the embedded deployment, and the
//! simulator's), absent in an API-only process of the distributed deployment (each worker
//! exports its view on its `/metrics`).

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
    /// This process's deliver stage paces the sender (else `current_rate_per_s` and
    /// `pace_signals` are not known here).
    pub paced_here: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SenderList {
    pub items: Vec<SenderRate>,
}

#[utoipa::path(get, path = "/v1/senders", tag = "senders", responses((status = 200, description = "The tenant's senders: configured rate and stopped from its settings and the shared state; current rate where this process paces them", body = SenderList)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<SenderList>> {
    let tenant_id = caller.tenant()?;
    let tenant = tenant_id.0.to_string();
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
            paced_here: true,
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
    for config in state.store.list_providers(tenant_id).await? {
        let provider = config.settings.kind().as_str();
        for s in config.settings.senders() {
            senders.entry((provider.to_string(), s.id.clone())).or_insert_with(|| SenderRate {
                provider: provider.to_string(),
                sender: s.id.clone(),
                configured_rate_per_s: s.rate_limit_per_s.map(f64::from),
                ..Default::default()
            });
        }
    }
    for key in state.state.stopped_senders(tenant_id).await? {
        if let Some(entry) = senders.get_mut(&key) {
            entry.stopped = true;
        }
    }
    Ok(Json(SenderList { items: senders.into_values().collect() }))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/senders", axum::routing::get(list))
}
