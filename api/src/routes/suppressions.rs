//! `/v1/suppressions`: addresses a tenant never sends to (render skips and counts them).

use crate::error::{parse_json, ApiError, ApiResult};
use crate::{validate, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An address (E.164 phone number or email) the tenant never sends to.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Suppress {
    #[schema(min_length = 1, max_length = 320)]
    pub address: String,
}

/// Suppressed addresses in address order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SuppressionPage {
    pub items: Vec<String>,
    /// Pass as `cursor` for the next page (null: the last page).
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// The `next_cursor` of the previous page.
    #[param(max_length = 320)]
    cursor: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = Suppress, responses((status = 201, description = "Suppressed (the address in its canonical form)", body = Suppress)), security(("bearer" = [])))]
pub(crate) async fn add(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Suppress>)> {
    caller.require(Role::Operator)?;
    let req: Suppress = parse_json(&body)?;
    let address = validate::address(&req.address).map_err(|e| ApiError::unprocessable("invalid_address", e))?;
    state.store.put_suppression(caller.tenant()?, &address).await?;
    Ok((StatusCode::CREATED, Json(Suppress { address })))
}

#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions", params(ListQuery), responses((status = 200, description = "Suppressed addresses, paged", body = SuppressionPage)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SuppressionPage>> {
    let q = super::query(query)?;
    let limit = super::limit(q.limit)?;
    let items = state.store.list_suppressions(caller.tenant()?, q.cursor.as_deref(), limit).await?;
    let next_cursor = (items.len() == limit).then(|| items.last().cloned()).flatten();
    Ok(Json(SuppressionPage { items, next_cursor }))
}

#[utoipa::path(delete, path = "/v1/suppressions/{address}", tag = "suppressions", params(("address" = String, Path, description = "The suppressed address")), responses((status = 204, description = "Removed")), security(("bearer" = [])))]
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(address): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Operator)?;
    let address = validate::address(&address).map_err(|_| ApiError::not_found("suppression"))?;
    if state.store.remove_suppression(caller.tenant()?, &address).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("suppression"))
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/suppressions", get(list).post(add)).route("/v1/suppressions/{address}", delete(remove))
}
