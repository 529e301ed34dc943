//! `/v1/tenants`: platform admins manage tenants; a tenant's own admins may read theirs and
//! rename it. The limits (`rate_limit_per_s`, `burst`, `weight`) belong to the platform: a
//! tenant admin changing one gets 403 `forbidden_field`, and every store refuses limits outside
//! the platform's bounds whoever asks (`storage::Tenant::check_limits`). Deleting a tenant
//! revokes it at once (`stages::lifecycle::Lifecycle::delete_tenant`).

use crate::error::{parse_id, parse_json, ApiError, ApiResult};
use crate::{idempotency, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use schemas::{now_ms, TenantId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use storage::{Tenant, TenantState};

/// A new tenant. Limits default to unlimited, a burst of 10% of the rate, weight 1; the burst
/// is at most 10 x the rate and 100,000.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    /// Messages per second for the whole tenant (absent or null: unlimited).
    #[schema(minimum = 1)]
    rate_limit_per_s: Option<u32>,
    #[schema(maximum = 100000)]
    burst: Option<u32>,
    #[schema(minimum = 1, maximum = 1000)]
    weight: Option<u32>,
}

/// A PATCH body: an absent field is unchanged; `null` resets `rate_limit_per_s` to unlimited
/// and is refused (422) for the others.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchTenant {
    #[serde(default, deserialize_with = "crate::validate::present")]
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: Option<Option<String>>,
    /// Platform admins only; null: unlimited.
    #[serde(default, deserialize_with = "crate::validate::present")]
    #[schema(minimum = 1)]
    rate_limit_per_s: Option<Option<u32>>,
    /// Platform admins only.
    #[serde(default, deserialize_with = "crate::validate::present")]
    #[schema(maximum = 100000)]
    burst: Option<Option<u32>>,
    /// Platform admins only.
    #[serde(default, deserialize_with = "crate::validate::present")]
    #[schema(minimum = 1, maximum = 1000)]
    weight: Option<Option<u32>>,
}

/// A tenant as the API shows it (provider settings live under `/providers`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: u64,
    pub name: String,
    /// Messages per second (null: unlimited).
    pub rate_limit_per_s: Option<u32>,
    pub burst: u32,
    pub weight: u32,
    pub created_ms: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantView>,
}

pub fn view(t: &Tenant) -> TenantView {
    TenantView {
        id: t.id.0,
        name: t.name.clone(),
        rate_limit_per_s: t.rate_limit_per_s,
        burst: t.burst,
        weight: t.weight,
        created_ms: t.created_ms,
    }
}

/// The platform's limit rules as an API error (the store applies the same rules again).
fn check_limits(tenant: &Tenant) -> ApiResult<()> {
    tenant.check_limits().map_err(|e| ApiError::unprocessable(e.code, e.message))
}

/// A field only platform admins may change.
fn forbidden_field(field: &'static str) -> ApiError {
    ApiError::forbidden(format!("only a platform admin may change {field}"))
        .with_code("forbidden_field")
        .with("field", field)
}

/// `null` where the field cannot be null.
fn not_null<T>(field: &'static str, value: Option<T>) -> ApiResult<T> {
    value.ok_or_else(|| {
        ApiError::unprocessable("null_not_allowed", format!("{field} cannot be null")).with("field", field)
    })
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant, responses((status = 201, description = "Tenant created", body = TenantView)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::PlatformAdmin)?;
    let req: CreateTenant = parse_json(&body)?;
    crate::validate::name(&req.name)?;
    let rate = req.rate_limit_per_s;
    let mut tenant = Tenant {
        id: TenantId(0),
        name: req.name,
        rate_limit_per_s: rate,
        burst: req.burst.unwrap_or_else(|| rate.map(|r| (r / 10).max(1)).unwrap_or(0)),
        weight: req.weight.unwrap_or(1),
        created_ms: now_ms(),
        state: TenantState::Active,
    };
    // Validated before an id is taken, so a bad request changes nothing.
    check_limits(&tenant)?;
    idempotency::once(&state, &caller, &headers, "POST /v1/tenants", &body, || async {
        tenant.id = TenantId(state.state.next_id("tenant").await?);
        state.store.put_tenant(&tenant).await?;
        Ok((StatusCode::CREATED, crate::to_value(view(&tenant))?))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", responses((status = 200, description = "Every tenant (platform admins)", body = TenantList)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<TenantList>> {
    caller.require(Role::PlatformAdmin)?;
    let tenants = state.store.list_tenants().await?;
    Ok(Json(TenantList { items: tenants.iter().filter(|t| t.is_active()).map(view).collect() }))
}

/// Loads a tenant the caller may see (its own, or any for platform admins).
pub(crate) async fn visible(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Tenant> {
    let id = TenantId(parse_id(raw, "tenant")?);
    if caller.role != Role::PlatformAdmin && caller.tenant()? != id {
        return Err(ApiError::not_found("tenant"));
    }
    state.store.get_tenant(id).await?.filter(Tenant::is_active).ok_or_else(|| ApiError::not_found("tenant"))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = u64, Path, description = "Tenant id")), responses((status = 200, description = "The tenant", body = TenantView)), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantView>> {
    Ok(Json(view(&visible(&state, &caller, &id).await?)))
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = u64, Path, description = "Tenant id")), request_body = PatchTenant, responses((status = 200, description = "Updated tenant", body = TenantView)), security(("bearer" = [])))]
pub(crate) async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<TenantView>> {
    caller.require(Role::TenantAdmin)?;
    let req: PatchTenant = parse_json(&body)?;
    let current = visible(&state, &caller, &id).await?;
    let mut tenant = current.clone();
    if let Some(name) = req.name {
        tenant.name = not_null("name", name)?;
        crate::validate::name(&tenant.name)?;
    }
    if let Some(rate) = req.rate_limit_per_s {
        tenant.rate_limit_per_s = rate;
    }
    if let Some(burst) = req.burst {
        tenant.burst = not_null("burst", burst)?;
    }
    if let Some(weight) = req.weight {
        tenant.weight = not_null("weight", weight)?;
    }
    if caller.role != Role::PlatformAdmin {
        for (field, changed) in [
            ("rate_limit_per_s", tenant.rate_limit_per_s != current.rate_limit_per_s),
            ("burst", tenant.burst != current.burst),
            ("weight", tenant.weight != current.weight),
        ] {
            if changed {
                return Err(forbidden_field(field));
            }
        }
    }
    check_limits(&tenant)?;
    state.store.put_tenant(&tenant).await?;
    Ok(Json(view(&tenant)))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = u64, Path, description = "Tenant id")), responses((status = 204, description = "Deleted: its tokens are refused from now on, its campaigns cancelled, its senders released; its data is purged later")), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::PlatformAdmin)?;
    let id = TenantId(parse_id(&id, "tenant")?);
    if state.lifecycle.delete_tenant(id).await? {
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
