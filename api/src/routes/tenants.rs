//! `/v1/tenants`: platform admins manage tenants; a tenant's own admins may read theirs.

use crate::error::{parse_id, parse_json, ApiError, ApiResult};
use crate::{idempotency, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use schemas::{now_ms, TenantId};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use storage::Tenant;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    name: String,
    rate_limit_per_s: Option<u32>,
    burst: Option<u32>,
    weight: Option<u32>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchTenant {
    name: Option<String>,
    rate_limit_per_s: Option<Option<u32>>,
    burst: Option<u32>,
    weight: Option<u32>,
}

/// A tenant as the API shows it (provider settings live under `/providers`).
pub fn view(t: &Tenant) -> Value {
    json!({
        "id": t.id.0, "name": t.name, "rate_limit_per_s": t.rate_limit_per_s, "burst": t.burst,
        "weight": t.weight, "created_ms": t.created_ms,
    })
}

fn check(name: &str, weight: u32) -> ApiResult<()> {
    crate::validate::name(name)?;
    if weight == 0 || weight > 1000 {
        return Err(ApiError::unprocessable("invalid_weight", "weight must be 1-1000"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant, responses((status = 201, description = "Tenant created"), (status = 422, description = "Invalid tenant"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::PlatformAdmin)?;
    let req: CreateTenant = parse_json(&body)?;
    check(&req.name, req.weight.unwrap_or(1))?;
    idempotency::once(&state, &caller, &headers, "POST /v1/tenants", &body, || async {
        let id = TenantId(state.store.next_id("tenant").await?);
        let rate = req.rate_limit_per_s.filter(|r| *r > 0);
        let tenant = Tenant {
            id,
            name: req.name,
            rate_limit_per_s: rate,
            burst: req.burst.unwrap_or_else(|| rate.map(|r| (r / 10).max(1)).unwrap_or(0)),
            weight: req.weight.unwrap_or(1),
            created_ms: now_ms(),
        };
        state.store.put_tenant(&tenant).await?;
        Ok((StatusCode::CREATED, view(&tenant)))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", responses((status = 200, description = "All tenants"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::PlatformAdmin)?;
    let tenants = state.store.list_tenants().await?;
    Ok(Json(json!({"items": tenants.iter().map(view).collect::<Vec<_>>()})))
}

/// Loads a tenant the caller may see (its own, or any for platform admins).
pub(crate) async fn visible(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Tenant> {
    let id = TenantId(parse_id(raw, "tenant")?);
    if caller.role != Role::PlatformAdmin && caller.tenant()? != id {
        return Err(ApiError::not_found("tenant"));
    }
    state.store.get_tenant(id).await?.ok_or_else(|| ApiError::not_found("tenant"))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", responses((status = 200, description = "The tenant"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(view(&visible(&state, &caller, &id).await?)))
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", request_body = PatchTenant, responses((status = 200, description = "Updated tenant"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(Role::TenantAdmin)?;
    let req: PatchTenant = parse_json(&body)?;
    let mut tenant = visible(&state, &caller, &id).await?;
    if let Some(name) = req.name {
        tenant.name = name;
    }
    if let Some(rate) = req.rate_limit_per_s {
        tenant.rate_limit_per_s = rate.filter(|r| *r > 0);
    }
    if let Some(burst) = req.burst {
        tenant.burst = burst;
    }
    if let Some(weight) = req.weight {
        tenant.weight = weight;
    }
    check(&tenant.name, tenant.weight)?;
    state.store.put_tenant(&tenant).await?;
    Ok(Json(view(&tenant)))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::PlatformAdmin)?;
    let id = TenantId(parse_id(&id, "tenant")?);
    if state.store.delete_tenant(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("tenant"))
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants", get(list).post(create))
        .route("/v1/tenants/{id}", get(show).patch(patch).delete(delete))
}
