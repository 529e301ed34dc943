//! `GET /v1/campaigns/{id}/timeline`: a campaign's counters over time, for the console's chart
//! and for REST clients. One point per 5 s window in which reconcile moved the counters (the
//! counters as the window ended), oldest first, paged by `after_ms`.
//!
//! It is not: a rate series (the difference of two points over their distance is one), nor a
//! live feed (`/v1/campaigns/{id}/events` is).

use crate::error::{ApiError, ApiResult};
use crate::{AppState, Caller};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TimelineQuery {
    /// Only points after this window start (the `next_after_ms` of the previous page).
    after_ms: Option<u64>,
    /// Points per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The counters as they stood at the end of one 5 s window.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TimelinePoint {
    /// The window's start (Unix milliseconds, a multiple of 5,000).
    pub at_ms: u64,
    pub sent: u64,
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub cancelled: u64,
    pub dead_lettered: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub points: Vec<TimelinePoint>,
    /// Pass as `after_ms` for the next page (null: the last page).
    pub next_after_ms: Option<u64>,
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/timeline", tag = "campaigns", params(("id" = u64, Path, description = "Campaign id"), TimelineQuery), responses((status = 200, description = "The campaign's counters over time, oldest first", body = Timeline)), security(("bearer" = [])))]
pub(crate) async fn timeline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<TimelineQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Timeline>> {
    let q = super::query(query)?;
    let c = super::campaigns::owned(&state, &caller, &id).await?;
    let limit = super::limit(q.limit)?;
    if q.after_ms.is_some_and(|a| a > i64::MAX as u64) {
        return Err(ApiError::bad_request("invalid_query", "after_ms is out of range"));
    }
    let rows = state.store.get_timeline(c.tenant, c.id, q.after_ms, limit).await?;
    let next_after_ms = if rows.len() == limit { rows.last().map(|(at, _)| *at) } else { None };
    let points = rows
        .into_iter()
        .map(|(at_ms, k)| TimelinePoint {
            at_ms,
            sent: k.sent,
            delivered: k.delivered,
            read: k.read,
            failed: k.failed,
            suppressed: k.suppressed,
            cancelled: k.cancelled,
            dead_lettered: k.dead_lettered,
        })
        .collect();
    Ok(Json(Timeline { points, next_after_ms }))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/campaigns/{id}/timeline", get(timeline))
}
