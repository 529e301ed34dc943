//! `/v1/dlq`: dead-lettered messages with their reasons, and redrive.

use crate::error::{parse_json, ApiError, ApiResult};
use crate::{idempotency, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use pipeline::{topics, Emitter};
use schemas::{CampaignId, DeadLetter, MessageId, RenderedMessage, RetryBatch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Letters read per store call while filtering by code.
const SCAN_PAGE: usize = 1_000;
/// Letters one filtered list request reads at most before it returns a cursor.
const SCAN_BUDGET: usize = 5_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DlqQuery {
    /// Only this campaign's letters.
    campaign_id: Option<u64>,
    /// Only letters with this code (the provider's error code, e.g. `131049`, or Herald's own,
    /// e.g. `sender_stopped`). A filtered page may hold fewer than `limit` letters (each request
    /// reads at most 5,000): follow `next_cursor` until it is null.
    #[param(max_length = 64)]
    code: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 64)]
    cursor: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A dead-lettered message: why, after how many attempts, and when it may be redriven.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    pub campaign_id: u64,
    pub message_id: String,
    pub address: String,
    /// The machine-readable code of the reason (`""` when it has none).
    pub code: String,
    /// The provider's code and message (at most 200 characters), or why Herald gave up.
    pub reason: String,
    pub attempts: u32,
    pub at_ms: u64,
    /// Not redrivable before this time (WhatsApp 131049); null: any time.
    pub not_before_ms: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page (null: the last page).
    pub next_cursor: Option<String>,
}

/// What a redrive did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RedriveResult {
    pub redriven: u64,
    /// Letters the provider said must wait (still in the DLQ, redrivable after `not_before_ms`).
    pub held_until_later: u64,
}

#[utoipa::path(get, path = "/v1/dlq", tag = "dlq", params(DlqQuery), responses((status = 200, description = "Dead letters with reasons, paged", body = DeadLetterPage)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<DlqQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<DeadLetterPage>> {
    let q = super::query(query)?;
    let tenant = caller.tenant()?;
    let limit = super::limit(q.limit)?;
    // Cursor: "<campaign>.<message id>"; without campaign_id, pages walk the tenant's campaigns.
    let (mut campaign_from, mut after) = match q.cursor.as_deref() {
        None => (q.campaign_id.unwrap_or(0), None),
        Some(raw) => {
            let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API returned");
            let (c, id) = raw.split_once('.').ok_or_else(bad)?;
            (c.parse().map_err(|_| bad())?, Some(id.parse::<MessageId>().map_err(|_| bad())?))
        }
    };
    let mut campaigns: Vec<u64> = match q.campaign_id {
        Some(c) => vec![c],
        None => state.store.list_campaigns(tenant).await?.into_iter().map(|c| c.id.0).collect(),
    };
    campaigns.retain(|c| *c >= campaign_from);
    campaigns.sort_unstable();
    let code = q.code.as_deref().filter(|c| !c.is_empty());
    if code.is_some_and(|c| c.len() > 64) {
        return Err(ApiError::bad_request("invalid_code", "code is at most 64 characters"));
    }
    let page = |items, campaign: u64, after: Option<MessageId>| {
        let cursor = format!("{campaign}.{}", after.map(|id| id.to_string()).unwrap_or_default());
        Ok(Json(DeadLetterPage { items, next_cursor: Some(cursor) }))
    };
    let (mut items, mut scanned) = (Vec::new(), 0);
    for campaign in campaigns {
        if campaign != campaign_from {
            after = None;
        }
        campaign_from = campaign;
        loop {
            let want = if code.is_some() { SCAN_PAGE } else { limit - items.len() };
            let entries = state.store.scan_dlq(tenant, CampaignId(campaign), after, want).await?;
            scanned += entries.len();
            for e in &entries {
                after = Some(e.key.id);
                let letter_code = DeadLetter::code_of(&e.letter.reason);
                if code.is_some_and(|c| c != letter_code) {
                    continue;
                }
                items.push(DeadLetterView {
                    campaign_id: campaign,
                    message_id: e.key.id.to_string(),
                    address: e.letter.message.address.clone(),
                    code: letter_code.to_string(),
                    reason: e.letter.reason.clone(),
                    attempts: e.letter.attempts,
                    at_ms: e.letter.at_ms,
                    not_before_ms: e.letter.not_before_ms,
                });
                if items.len() == limit {
                    return page(items, campaign, after);
                }
            }
            if entries.len() < want {
                break;
            }
            // A filter that matches little must not turn one request into a scan of everything.
            if scanned >= SCAN_BUDGET {
                return page(items, campaign, after);
            }
        }
    }
    Ok(Json(DeadLetterPage { items, next_cursor: None }))
}

/// What to redrive: a campaign's letters, given messages, or both (at least one).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redrive {
    campaign_id: Option<u64>,
    #[schema(max_items = 10000, inline)]
    message_ids: Option<Vec<MessageIdText>>,
}

/// A message id: 32 hex digits.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[0-9a-fA-F]{32}$")]
#[serde(transparent)]
pub(crate) struct MessageIdText(String);

/// At most this many messages per redrive call.
const REDRIVE_LIMIT: usize = 10_000;

/// Sends dead-lettered messages again: the claim moves past the failed attempt, the message
/// goes back on `delivery.retry`, and its DLQ entry is removed. Reconcile lets the new
/// attempt's outcome supersede the dead letter.
#[utoipa::path(post, path = "/v1/dlq/redrive", tag = "dlq", request_body = Redrive, responses((status = 202, description = "Redriven (at most 10,000 per call)", body = RedriveResult)), security(("bearer" = [])))]
pub(crate) async fn redrive(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    let req: Redrive = parse_json(&body)?;
    if req.campaign_id.is_none() && req.message_ids.is_none() {
        return Err(ApiError::unprocessable("nothing_selected", "give campaign_id, message_ids or both"));
    }
    if req.message_ids.as_ref().is_some_and(|ids| ids.len() > REDRIVE_LIMIT) {
        return Err(ApiError::unprocessable("too_many_messages", format!("at most {REDRIVE_LIMIT} message_ids")));
    }
    let wanted: Option<HashSet<MessageId>> = req
        .message_ids
        .as_ref()
        .map(|ids| {
            ids.iter()
                .map(|MessageIdText(id)| {
                    id.parse().map_err(|_| {
                        ApiError::unprocessable("invalid_message_id", format!("{id:?} is not a message id"))
                    })
                })
                .collect()
        })
        .transpose()?;
    let campaigns: Vec<CampaignId> = match req.campaign_id {
        Some(c) => {
            state.store.get_campaign(tenant, CampaignId(c)).await?.ok_or_else(|| ApiError::not_found("campaign"))?;
            vec![CampaignId(c)]
        }
        None => state.store.list_campaigns(tenant).await?.into_iter().map(|c| c.id).collect(),
    };
    idempotency::once(&state, &caller, &headers, "POST /v1/dlq/redrive", &body, || async {
        let mut selected = Vec::new();
        for campaign in campaigns {
            let mut after = None;
            loop {
                let page = state.store.scan_dlq(tenant, campaign, after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.key.id);
                selected.extend(page.into_iter().filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&e.key.id))));
                if selected.len() >= REDRIVE_LIMIT {
                    break;
                }
            }
        }
        selected.truncate(REDRIVE_LIMIT);
        // Letters the provider said must wait (WhatsApp 131049) stay until their time.
        let now = schemas::now_ms();
        let held = selected.iter().filter(|e| e.letter.not_before_ms.is_some_and(|t| t > now)).count();
        selected.retain(|e| e.letter.not_before_ms.is_none_or(|t| t <= now));
        // A command to deliver, which alone owns claims: it sends a message whose claim still
        // says this attempt failed, and reconcile clears the letter once a later attempt is in.
        let mut out = Emitter::new(state.topics.clone());
        out.set_headers(crate::trace::current_headers());
        let mut by_campaign: BTreeMap<CampaignId, Vec<RenderedMessage>> = BTreeMap::new();
        for e in &selected {
            let message = RenderedMessage { attempt: e.letter.attempts, ..e.letter.message.clone() };
            by_campaign.entry(e.key.campaign).or_default().push(message);
        }
        for (campaign, messages) in by_campaign {
            for chunk in messages.chunks(500) {
                let batch = RetryBatch { tenant, campaign, redrive: true, messages: chunk.to_vec() };
                out.emit(&topics::RETRY, &batch)?;
            }
        }
        out.flush().await?;
        let keys: Vec<_> = selected.iter().map(|e| e.key).collect();
        Ok((
            StatusCode::ACCEPTED,
            crate::to_value(RedriveResult { redriven: keys.len() as u64, held_until_later: held as u64 })?,
        ))
    })
    .await
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/dlq", get(list)).route("/v1/dlq/redrive", post(redrive))
}
