//! `/v1/suppressions`: addresses a tenant never sends to (render skips and counts them).

use super::Page;
use crate::error::{parse_json, ApiError, ApiResult};
use crate::{validate, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Suppress {
    address: String,
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = Suppress, responses((status = 201, description = "Suppressed"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn add(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Operator)?;
    let req: Suppress = parse_json(&body)?;
    let address = validate::address(&req.address).map_err(|e| ApiError::unprocessable("invalid_address", e))?;
    state.store.put_suppression(caller.tenant()?, &address).await?;
    Ok((StatusCode::CREATED, Json(json!({"address": address}))))
}

#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions", responses((status = 200, description = "Suppressed addresses, paged"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Page<String>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items = state.store.list_suppressions(caller.tenant()?, q.cursor.as_deref(), limit).await?;
    let next_cursor = (items.len() == limit).then(|| items.last().cloned()).flatten();
    Ok(Json(Page { items, next_cursor }))
}

#[utoipa::path(delete, path = "/v1/suppressions/{address}", tag = "suppressions", responses((status = 204, description = "Removed"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
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
