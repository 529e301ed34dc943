//! `/v1/campaigns`: create, list, send / pause / resume / cancel (through
//! `stages::lifecycle`), progress (O(1), from the counters row). The message log is in
//! `messages`.

use crate::error::{parse_id, parse_json, ApiError, ApiResult};
use crate::{idempotency, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use schemas::{now_ms, AudienceId, CampaignId, TemplateId, TenantId};
use serde::{Deserialize, Serialize};
use stages::lifecycle::{shown_status as status, Action};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use storage::{Campaign, CampaignCounters, CampaignStatus};

/// A new campaign (a draft until `send`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCampaign {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    template_id: u64,
    audience_id: u64,
    /// Messages per second for this campaign (absent or null: only tenant and sender limits).
    #[schema(minimum = 1)]
    rate_limit_per_s: Option<u32>,
    /// When to send, ms since the epoch (a later `send` schedules instead of starting).
    scheduled_at: Option<u64>,
}

/// A campaign's status as callers see it (`completed` once every message is terminal).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Draft,
    Scheduled,
    Running,
    Paused,
    Completed,
    Cancelled,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    pub id: u64,
    pub name: String,
    pub template_id: u64,
    pub audience_id: u64,
    pub rate_limit_per_s: Option<u32>,
    #[schema(value_type = CampaignState)]
    pub status: &'static str,
    pub created_ms: u64,
    /// When it was started (or, while scheduled, when it will be).
    pub triggered_ms: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    pub items: Vec<CampaignView>,
}

/// `status` of the progress: the campaign's, or `waiting_for_quota` while a running campaign
/// waits for the WhatsApp messaging-tier budget (until `resume_at_ms`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgressState {
    Draft,
    Scheduled,
    Running,
    WaitingForQuota,
    Paused,
    Completed,
    Cancelled,
}

/// Exact counts per status (they add up to `total`), the rate and an estimate of the time left.
#[derive(Serialize, PartialEq, utoipa::ToSchema)]
pub struct Progress {
    #[schema(value_type = ProgressState)]
    pub status: &'static str,
    pub resume_at_ms: Option<u64>,
    /// Messages of the campaign (the audience size until chunking has sealed it).
    pub total: u64,
    /// Not yet sent.
    pub pending: u64,
    pub sent: u64,
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub cancelled: u64,
    pub dead_lettered: u64,
    /// Messages per second reaching a terminal status, smoothed.
    pub rate_per_s: f64,
    /// Seconds left at the current rate (null: unknown).
    pub eta_s: Option<f64>,
}

/// The last sample of a campaign's progress: when, how many terminal, smoothed rate.
type RateSample = (Instant, u64, f64);

/// Recent samples per campaign, for the progress rate and ETA.
#[derive(Default)]
pub struct ProgressRates(Mutex<HashMap<(TenantId, CampaignId), RateSample>>);

impl ProgressRates {
    /// Messages/s reaching a terminal state, smoothed over samples at least 1 s apart.
    fn rate(&self, key: (TenantId, CampaignId), terminal: u64) -> f64 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = map.entry(key).or_insert((now, terminal, 0.0));
        let elapsed = now.duration_since(entry.0).as_secs_f64();
        if elapsed >= 1.0 {
            let instant = terminal.saturating_sub(entry.1) as f64 / elapsed;
            entry.2 = if entry.2 == 0.0 { instant } else { 0.5 * entry.2 + 0.5 * instant };
            entry.0 = now;
            entry.1 = terminal;
        }
        entry.2
    }
}

fn view(c: &Campaign, counters: &CampaignCounters) -> CampaignView {
    CampaignView {
        id: c.id.0,
        name: c.name.clone(),
        template_id: c.template.0,
        audience_id: c.audience.0,
        rate_limit_per_s: c.rate_limit_per_s,
        status: status(c, counters).as_str(),
        created_ms: c.created_ms,
        triggered_ms: c.triggered_ms,
    }
}

pub(crate) async fn owned(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Campaign> {
    let id = CampaignId(parse_id(raw, "campaign")?);
    state.store.get_campaign(caller.tenant()?, id).await?.ok_or_else(|| ApiError::not_found("campaign"))
}

async fn counters(state: &AppState, c: &Campaign) -> ApiResult<CampaignCounters> {
    Ok(state.store.get_counters(c.tenant, c.id).await?.unwrap_or_default())
}

#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = CreateCampaign, responses((status = 201, description = "Campaign created (a draft)", body = CampaignView)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    let req: CreateCampaign = parse_json(&body)?;
    crate::validate::name(&req.name)?;
    if req.rate_limit_per_s == Some(0) {
        return Err(ApiError::unprocessable("invalid_rate_limit", "rate_limit_per_s must be at least 1 (null: none)"));
    }
    if state.store.get_template(tenant, TemplateId(req.template_id)).await?.is_none() {
        return Err(ApiError::unprocessable("unknown_template", format!("template {} not found", req.template_id)));
    }
    if state.store.get_audience(tenant, AudienceId(req.audience_id)).await?.is_none() {
        return Err(ApiError::unprocessable("unknown_audience", format!("audience {} not found", req.audience_id)));
    }
    idempotency::once(&state, &caller, &headers, "POST /v1/campaigns", &body, || async {
        let campaign = Campaign {
            id: CampaignId(state.state.next_id("campaign").await?),
            tenant,
            name: req.name,
            template: TemplateId(req.template_id),
            audience: AudienceId(req.audience_id),
            rate_limit_per_s: req.rate_limit_per_s,
            // A draft either way: `send` starts it, or schedules it when `scheduled_at` is ahead.
            status: CampaignStatus::Draft,
            created_ms: now_ms(),
            triggered_ms: req.scheduled_at,
            version: 0,
        };
        state.store.put_campaign(&campaign).await?;
        Ok((StatusCode::CREATED, crate::to_value(view(&campaign, &CampaignCounters::default()))?))
    })
    .await
}

#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", responses((status = 200, description = "Campaigns of the tenant", body = CampaignList)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<CampaignList>> {
    let mut items = Vec::new();
    for c in state.store.list_campaigns(caller.tenant()?).await? {
        items.push(view(&c, &counters(&state, &c).await?));
    }
    Ok(Json(CampaignList { items }))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = u64, Path, description = "Campaign id")), responses((status = 200, description = "The campaign", body = CampaignView)), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    let c = owned(&state, &caller, &id).await?;
    Ok(Json(view(&c, &counters(&state, &c).await?)))
}

/// Applies a lifecycle action through the one owner of status changes (compare-and-set: a
/// request that loses a race gets 409 `campaign_changed` and changes nothing).
async fn action(
    state: Arc<AppState>,
    caller: Caller,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    action: Action,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let c = owned(&state, &caller, &id).await?;
    let request = format!("POST /v1/campaigns/{id}/{}", action.as_str());
    idempotency::once(&state, &caller, &headers, &request, &body, || async {
        let headers = crate::trace::current_headers();
        let (campaign, counters) = state.lifecycle.apply(c.tenant, c.id, action, &headers).await?;
        Ok((StatusCode::ACCEPTED, crate::to_value(view(&campaign, &counters))?))
    })
    .await
}

macro_rules! lifecycle {
    ($($name:ident => $action:expr),*) => {$(
        #[utoipa::path(post, path = concat!("/v1/campaigns/{id}/", stringify!($name)), tag = "campaigns",
            params(("id" = u64, Path, description = "Campaign id")),
            responses((status = 202, description = "Applied: the campaign with its new status", body = CampaignView)),
            security(("bearer" = [])))]
        pub(crate) async fn $name(State(state): State<Arc<AppState>>, caller: Caller, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
            action(state, caller, headers, id, body, $action).await
        }
    )*};
}
lifecycle!(send => Action::Send, pause => Action::Pause, resume => Action::Resume, cancel => Action::Cancel);

#[utoipa::path(get, path = "/v1/campaigns/{id}/progress", tag = "campaigns", params(("id" = u64, Path, description = "Campaign id")), responses((status = 200, description = "Exact counters, rate and ETA (O(1): read from the counters row)", body = Progress)), security(("bearer" = [])))]
pub(crate) async fn progress(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Progress>> {
    let c = owned(&state, &caller, &id).await?;
    Ok(Json(progress_of(&state, &c).await?))
}

/// A campaign's progress now (the REST endpoint and the event stream show the same).
pub(crate) async fn progress_of(state: &AppState, c: &Campaign) -> ApiResult<Progress> {
    let k = counters(state, c).await?;
    let total = match k.total {
        Some(t) => t,
        None => state.store.get_audience(c.tenant, c.audience).await?.map(|a| a.recipient_count).unwrap_or(0),
    };
    let pending = total.saturating_sub(k.known());
    // The rate as shown (0.1 msg/s steps): a rate that rounds to 0 has no ETA, not a huge one.
    let rate = (state.progress.rate((c.tenant, c.id), k.terminal()) * 10.0).round() / 10.0;
    let remaining = total.saturating_sub(k.terminal());
    let eta = if remaining == 0 {
        Some(0.0)
    } else if rate > 0.0 {
        Some(remaining as f64 / rate)
    } else {
        None
    };
    // A running campaign whose throttle waits for the WhatsApp messaging-tier budget.
    let mut shown = status(c, &k).as_str();
    let mut resume_at_ms = None;
    if shown == "running" {
        if let Some(at) = state.state.get_quota_wait(c.tenant, c.id).await?.filter(|at| *at > schemas::now_ms()) {
            shown = "waiting_for_quota";
            resume_at_ms = Some(at);
        }
    }
    Ok(Progress {
        status: shown,
        resume_at_ms,
        total,
        pending,
        sent: k.sent,
        delivered: k.delivered,
        read: k.read,
        failed: k.failed,
        suppressed: k.suppressed,
        cancelled: k.cancelled,
        dead_lettered: k.dead_lettered,
        rate_per_s: rate,
        eta_s: eta.map(|e| e.round()),
    })
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/campaigns", get(list).post(create))
        .route("/v1/campaigns/{id}", get(show))
        .route("/v1/campaigns/{id}/send", post(send))
        .route("/v1/campaigns/{id}/pause", post(pause))
        .route("/v1/campaigns/{id}/resume", post(resume))
        .route("/v1/campaigns/{id}/cancel", post(cancel))
        .route("/v1/campaigns/{id}/progress", get(progress))
}
