//! `/v1/dlq`: dead-lettered messages with their reasons.

use super::Page;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, Caller};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use schemas::{CampaignId, MessageId};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize)]
struct DlqQuery {
    campaign_id: Option<u64>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<DlqQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Page<Value>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let tenant = caller.tenant()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
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
    let mut items = Vec::new();
    for campaign in campaigns {
        if campaign != campaign_from {
            after = None;
        }
        campaign_from = campaign;
        let entries = state.store.scan_dlq(tenant, CampaignId(campaign), after, limit - items.len()).await?;
        for e in &entries {
            items.push(json!({
                "campaign_id": campaign, "message_id": e.key.id.to_string(), "address": e.letter.message.address,
                "reason": e.letter.reason, "attempts": e.letter.attempts, "at_ms": e.letter.at_ms,
            }));
        }
        if items.len() == limit {
            let last = entries.last().map(|e| e.key.id.to_string()).unwrap_or_default();
            return Ok(Json(Page { items, next_cursor: Some(format!("{campaign}.{last}")) }));
        }
    }
    Ok(Json(Page { items, next_cursor: None }))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/dlq", get(list))
}
