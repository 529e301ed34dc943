//! `/v1/campaigns`: create, list, send / pause / resume / cancel, progress (O(1), from the
//! counters row) and the message log.

use super::Page;
use crate::error::{parse_id, parse_json, ApiError, ApiResult};
use crate::{idempotency, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use pipeline::{topics, Emitter};
use schemas::{now_ms, AudienceId, CampaignId, MessageId, SendRequest, TemplateId, TenantId};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use storage::{Campaign, CampaignCounters, CampaignStatus, MessageStatus};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCampaign {
    name: String,
    template_id: u64,
    audience_id: u64,
    rate_limit_per_s: Option<u32>,
    /// When to send, ms since the epoch (a later `send` schedules instead of starting).
    scheduled_at: Option<u64>,
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

/// The status the API reports: the control status, or `completed` once every message is terminal.
fn status(c: &Campaign, counters: &CampaignCounters) -> CampaignStatus {
    match (c.status, counters.completed_ms) {
        (CampaignStatus::Cancelled, _) => CampaignStatus::Cancelled,
        (_, Some(_)) => CampaignStatus::Completed,
        (s, None) => s,
    }
}

fn view(c: &Campaign, counters: &CampaignCounters) -> Value {
    json!({
        "id": c.id.0, "name": c.name, "template_id": c.template.0, "audience_id": c.audience.0,
        "rate_limit_per_s": c.rate_limit_per_s, "status": status(c, counters).as_str(),
        "created_ms": c.created_ms, "triggered_ms": c.triggered_ms,
    })
}

async fn owned(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Campaign> {
    let id = CampaignId(parse_id(raw, "campaign")?);
    state.store.get_campaign(caller.tenant()?, id).await?.ok_or_else(|| ApiError::not_found("campaign"))
}

async fn counters(state: &AppState, c: &Campaign) -> ApiResult<CampaignCounters> {
    Ok(state.store.get_counters(c.tenant, c.id).await?.unwrap_or_default())
}

#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = CreateCampaign, responses((status = 201, description = "Campaign created"), (status = 422, description = "Unknown template or audience"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
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
    if state.store.get_template(tenant, TemplateId(req.template_id)).await?.is_none() {
        return Err(ApiError::unprocessable("unknown_template", format!("template {} not found", req.template_id)));
    }
    if state.store.get_audience(tenant, AudienceId(req.audience_id)).await?.is_none() {
        return Err(ApiError::unprocessable("unknown_audience", format!("audience {} not found", req.audience_id)));
    }
    idempotency::once(&state, &caller, &headers, "POST /v1/campaigns", &body, || async {
        let campaign = Campaign {
            id: CampaignId(state.store.next_id("campaign").await?),
            tenant,
            name: req.name,
            template: TemplateId(req.template_id),
            audience: AudienceId(req.audience_id),
            rate_limit_per_s: req.rate_limit_per_s.filter(|r| *r > 0),
            // A draft either way: `send` starts it, or schedules it when `scheduled_at` is ahead.
            status: CampaignStatus::Draft,
            created_ms: now_ms(),
            triggered_ms: req.scheduled_at,
        };
        state.store.put_campaign(&campaign).await?;
        Ok((StatusCode::CREATED, view(&campaign, &CampaignCounters::default())))
    })
    .await
}

#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", responses((status = 200, description = "Campaigns of the tenant"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for c in state.store.list_campaigns(caller.tenant()?).await? {
        items.push(view(&c, &counters(&state, &c).await?));
    }
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", responses((status = 200, description = "The campaign"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = owned(&state, &caller, &id).await?;
    Ok(Json(view(&c, &counters(&state, &c).await?)))
}

/// Starts a campaign now: `Running` first (a crash after this resumes it at start-up), then
/// the send request.
pub async fn start(state: &AppState, mut campaign: Campaign) -> ApiResult<Campaign> {
    campaign.status = CampaignStatus::Running;
    campaign.triggered_ms = Some(now_ms());
    state.store.put_campaign(&campaign).await?;
    let mut out = Emitter::new(state.topics.clone());
    out.set_headers(crate::trace::current_headers());
    let request = SendRequest { tenant: campaign.tenant, campaign: campaign.id, requested_at_ms: now_ms() };
    out.emit(&topics::SENDS, campaign.tenant, &request)?;
    out.flush().await?;
    Ok(campaign)
}

/// Applies a lifecycle action, or 409 if the campaign's status does not allow it.
async fn transition(state: &AppState, mut c: Campaign, action: &str) -> ApiResult<Value> {
    let counters = counters(state, &c).await?;
    let current = status(&c, &counters);
    use CampaignStatus::*;
    let c = match (action, current) {
        ("send", Draft) => match c.triggered_ms.filter(|at| *at > now_ms()) {
            Some(_) => {
                c.status = Scheduled;
                state.store.put_campaign(&c).await?;
                c
            }
            None => start(state, c).await?,
        },
        ("send", Scheduled) => start(state, c).await?,
        ("pause", Running) => {
            c.status = Paused;
            state.store.put_campaign(&c).await?;
            c
        }
        ("resume", Paused) => {
            c.status = Running;
            state.store.put_campaign(&c).await?;
            c
        }
        ("cancel", Draft | Scheduled | Running | Paused) => {
            let was_started = matches!(current, Running | Paused);
            c.status = Cancelled;
            state.store.put_campaign(&c).await?;
            if !was_started {
                // Never sent: chunk it anyway so every recipient gets a `cancelled` outcome.
                let mut out = Emitter::new(state.topics.clone());
                out.set_headers(crate::trace::current_headers());
                out.emit(
                    &topics::SENDS,
                    c.tenant,
                    &SendRequest { tenant: c.tenant, campaign: c.id, requested_at_ms: now_ms() },
                )?;
                out.flush().await?;
            }
            c
        }
        (action, status) => {
            return Err(ApiError::conflict(
                "illegal_transition",
                format!("cannot {action} a campaign that is {}", status.as_str()),
            ))
        }
    };
    Ok(view(&c, &counters))
}

async fn action(
    state: Arc<AppState>,
    caller: Caller,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    action: &'static str,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let c = owned(&state, &caller, &id).await?;
    let request = format!("POST /v1/campaigns/{id}/{action}");
    idempotency::once(&state, &caller, &headers, &request, &body, || async {
        Ok((StatusCode::ACCEPTED, transition(&state, c, action).await?))
    })
    .await
}

macro_rules! lifecycle {
    ($($name:ident),*) => {$(
        #[utoipa::path(post, path = concat!("/v1/campaigns/{id}/", stringify!($name)), tag = "campaigns",
            responses((status = 202, description = "Accepted"), (status = 409, description = "Illegal transition"),
                (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"),
                (status = 404, description = "Not found")),
            security(("bearer" = [])))]
        pub(crate) async fn $name(State(state): State<Arc<AppState>>, caller: Caller, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
            action(state, caller, headers, id, body, stringify!($name)).await
        }
    )*};
}
lifecycle!(send, pause, resume, cancel);

#[utoipa::path(get, path = "/v1/campaigns/{id}/progress", tag = "campaigns", responses((status = 200, description = "{status, total, pending, sent, delivered, read, failed, suppressed, cancelled, dead_lettered, rate_per_s, eta_s}"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn progress(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = owned(&state, &caller, &id).await?;
    let k = counters(&state, &c).await?;
    let total = match k.total {
        Some(t) => t,
        None => state.store.get_audience(c.tenant, c.audience).await?.map(|a| a.recipient_count).unwrap_or(0),
    };
    let pending = total.saturating_sub(k.known());
    let rate = state.progress.rate((c.tenant, c.id), k.terminal());
    let remaining = total.saturating_sub(k.terminal());
    let eta = if remaining == 0 {
        Some(0.0)
    } else if rate > 0.0 {
        Some(remaining as f64 / rate)
    } else {
        None
    };
    // A running campaign whose throttle waits for the WhatsApp messaging-tier budget.
    let mut shown = status(&c, &k).as_str();
    let mut resume_at_ms = None;
    if shown == "running" {
        if let Some(at) = state.store.get_quota_wait(c.tenant, c.id).await?.filter(|at| *at > schemas::now_ms()) {
            shown = "waiting_for_quota";
            resume_at_ms = Some(at);
        }
    }
    Ok(Json(json!({
        "status": shown, "resume_at_ms": resume_at_ms, "total": total, "pending": pending, "sent": k.sent,
        "delivered": k.delivered, "read": k.read, "failed": k.failed, "suppressed": k.suppressed,
        "cancelled": k.cancelled, "dead_lettered": k.dead_lettered,
        "rate_per_s": (rate * 10.0).round() / 10.0, "eta_s": eta.map(|e| e.round()),
    })))
}

#[derive(Deserialize)]
pub(crate) struct MessagesQuery {
    status: Option<String>,
    address: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn parse_cursor(raw: &str) -> ApiResult<(u32, MessageId)> {
    let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API returned");
    let (bucket, id) = raw.split_once('.').ok_or_else(bad)?;
    Ok((bucket.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/messages", tag = "campaigns", responses((status = 200, description = "{items, next_cursor}; filters: status, address, limit, cursor"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn messages(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Page<Value>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let c = owned(&state, &caller, &id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let wanted = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            MessageStatus::ALL
                .into_iter()
                .find(|m| m.as_str() == s)
                .ok_or_else(|| ApiError::bad_request("invalid_status", format!("unknown status {s:?}")))?,
        ),
    };
    let address = q.address.as_deref().map(|a| crate::validate::address(a).unwrap_or_else(|_| a.to_string()));
    let mut after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let mut items = Vec::new();
    // Filters scan the campaign's log in pages; one request scans at most 20 pages, then hands
    // back a cursor so a sparse filter never turns into an unbounded scan.
    for _ in 0..20 {
        let page = state.store.scan_messages(c.tenant, c.id, after, 1000).await?;
        let Some((last, _)) = page.last() else {
            after = None;
            break;
        };
        after = Some((last.bucket, last.id));
        for (key, r) in page {
            if wanted.is_some_and(|w| w != r.status) || address.as_ref().is_some_and(|a| *a != r.address) {
                continue;
            }
            items.push(json!({
                "message_id": key.id.to_string(), "address": r.address, "status": r.status.as_str(),
                "attempts": r.attempts, "provider_message_id": r.provider_message_id, "error": r.error,
                "history": r.history.iter().map(|(s, at)| json!({"status": s.as_str(), "at_ms": at})).collect::<Vec<_>>(),
            }));
            if items.len() == limit {
                after = Some((key.bucket, key.id));
                return Ok(Json(Page { items, next_cursor: after.map(|(b, id)| format!("{b}.{id}")) }));
            }
        }
    }
    Ok(Json(Page { items, next_cursor: after.map(|(b, id)| format!("{b}.{id}")) }))
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
        .route("/v1/campaigns/{id}/messages", get(messages))
}

/// Starts scheduled campaigns whose time has come (checked every `every`).
pub async fn run_scheduler(state: Arc<AppState>, every: std::time::Duration, shutdown: pipeline::Shutdown) {
    while !shutdown.is_triggered() {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
        let Ok(tenants) = state.store.list_tenants().await else { continue };
        for t in tenants {
            let Ok(campaigns) = state.store.list_campaigns(t.id).await else { continue };
            for c in campaigns {
                if c.status == CampaignStatus::Scheduled && c.triggered_ms.is_some_and(|at| at <= now_ms()) {
                    if let Err(e) = start(&state, c).await {
                        tracing::warn!(error = e.message, "could not start a scheduled campaign");
                    }
                }
            }
        }
    }
}
