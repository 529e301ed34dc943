//! `/v1/campaigns/{id}/messages`: a campaign's message log, filtered by status or address,
//! with cursor pagination. A sparse filter scans at most 20,000 rows per request and then hands
//! back a cursor, so no request turns into an unbounded scan.

use crate::error::{ApiError, ApiResult};
use crate::{AppState, Caller};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use schemas::MessageId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use storage::{MessageRecord, MessageStatus};

/// A message's status in the log.
#[derive(Serialize, Deserialize, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    Suppressed,
    Cancelled,
    DeadLettered,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MessagesQuery {
    /// Only messages in this status.
    #[param(value_type = Option<MessageState>)]
    status: Option<String>,
    /// Only messages to this address (E.164 phone number or email).
    #[param(max_length = 320)]
    address: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 64)]
    cursor: Option<String>,
}

/// One entry of a message's history.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[schema(value_type = MessageState)]
    pub status: &'static str,
    pub at_ms: u64,
}

/// A message of the log.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// 32 hex digits, deterministic in (tenant, campaign, recipient, channel).
    pub message_id: String,
    pub address: String,
    #[schema(value_type = MessageState)]
    pub status: &'static str,
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    /// Why it failed (the provider's own code and message, at most 200 characters).
    pub error: Option<String>,
    /// Every status it entered, in order.
    pub history: Vec<HistoryEntry>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    /// Pass as `cursor` for the next page (null: the end of the log).
    pub next_cursor: Option<String>,
}

fn parse_cursor(raw: &str) -> ApiResult<(u32, MessageId)> {
    let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API returned");
    let (bucket, id) = raw.split_once('.').ok_or_else(bad)?;
    Ok((bucket.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

fn view(id: MessageId, r: MessageRecord) -> MessageView {
    MessageView {
        message_id: id.to_string(),
        address: r.address,
        status: r.status.as_str(),
        attempts: r.attempts,
        provider_message_id: r.provider_message_id,
        error: r.error,
        history: r.history.iter().map(|(s, at)| HistoryEntry { status: s.as_str(), at_ms: *at }).collect(),
    }
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/messages", tag = "campaigns", params(("id" = u64, Path, description = "Campaign id"), MessagesQuery), responses((status = 200, description = "A page of the message log", body = MessagePage)), security(("bearer" = [])))]
pub(crate) async fn messages(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<MessagePage>> {
    let q = super::query(query)?;
    let c = super::campaigns::owned(&state, &caller, &id).await?;
    let limit = super::limit(q.limit)?;
    let wanted = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            MessageStatus::ALL
                .into_iter()
                .find(|m| m.as_str() == s)
                .ok_or_else(|| ApiError::bad_request("invalid_query", format!("unknown status {s:?}")))?,
        ),
    };
    let address = q.address.as_deref().map(|a| crate::validate::address(a).unwrap_or_else(|_| a.to_string()));
    let mut after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let mut items = Vec::new();
    let cursor = |after: Option<(u32, MessageId)>| after.map(|(b, id)| format!("{b}.{id}"));
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
            items.push(view(key.id, r));
            if items.len() == limit {
                return Ok(Json(MessagePage { items, next_cursor: cursor(Some((key.bucket, key.id))) }));
            }
        }
    }
    Ok(Json(MessagePage { items, next_cursor: cursor(after) }))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/campaigns/{id}/messages", get(messages))
}
