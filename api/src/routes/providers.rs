//! `/v1/tenants/{id}/providers/{name}`: a tenant's provider settings (`whatsapp`, `sms`,
//! `email`, `webhook`). Tenant admins manage their own, platform admins any. Secrets
//! (`access_token`, `app_secret`, `verify_token`, `auth_token`, `password`, `signing_secret`)
//! are sealed with AES-256-GCM before they are stored and never returned: GET shows which are
//! set, not what they are. A PUT replaces the whole configuration (and resets the senders'
//! pacing state, including senders the provider had stopped).
//!
//! URLs and SMTP hosts that are (or resolve to) loopback, private, link-local or metadata
//! addresses are refused (422 `address_not_allowed`) unless the operator allows them. A
//! WhatsApp phone number id or SMS number belongs to one tenant (409 `sender_taken`, decided
//! atomically by the store); webhook and email senders are each tenant's own.

use super::provider_settings::{
    check_addresses, parse, view, ProviderBody, ProviderList, ProviderName, ProviderView, SECRET_NAMES,
};
use crate::error::{ApiError, ApiResult};
use crate::routes::tenants::visible;
use crate::{AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use schemas::now_ms;
use std::sync::Arc;
use storage::secrets::aad;
use storage::{ProviderConfig, ProviderKind};

/// The blind-index purpose of WhatsApp verify tokens (see `routes::webhooks::verify`).
pub const VERIFY_TOKEN_INDEX: &str = "whatsapp-verify-token";

fn kind(name: &str) -> ApiResult<ProviderKind> {
    ProviderKind::parse(name).ok_or_else(|| ApiError::not_found("provider"))
}

/// Names of the secrets a stored configuration holds (opened, never shown).
fn secret_names(state: &AppState, config: &ProviderConfig) -> Vec<&'static str> {
    let opened = state.secrets.open(&aad(config.tenant, config.settings.kind().as_str()), &config.secrets);
    let opened = opened.unwrap_or_default();
    SECRET_NAMES.into_iter().filter(|n| opened.contains_key(*n)).collect()
}

#[utoipa::path(put, path = "/v1/tenants/{id}/providers/{name}", tag = "providers", params(("id" = u64, Path, description = "Tenant id"), ("name" = ProviderName, Path, description = "Which provider; the body is that provider's")), request_body = ProviderBody, responses((status = 200, description = "Stored (secrets sealed, not returned)", body = ProviderView)), security(("bearer" = [])))]
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<ProviderView>> {
    caller.require(Role::TenantAdmin)?;
    let tenant = visible(&state, &caller, &id).await?;
    let kind = kind(&name)?;
    let (settings, secrets) = parse(kind, &body)?;
    check_addresses(&state, &settings).await?;
    let sealed = state.secrets.seal(&aad(tenant.id, kind.as_str()), &secrets);
    let verify_token_index =
        secrets.get("verify_token").map(|token| state.secrets.blind_index(VERIFY_TOKEN_INDEX, token));
    let config =
        ProviderConfig { tenant: tenant.id, settings, secrets: sealed, updated_ms: now_ms(), verify_token_index };
    // The store checks global senders and writes in one step (409 `sender_taken`).
    state.store.put_provider(&config).await?;
    // New settings: senders the provider had stopped may send again (the operator fixed them).
    state.state.clear_stopped(tenant.id, kind.as_str()).await?;
    let names = SECRET_NAMES.into_iter().filter(|n| secrets.contains_key(*n)).collect();
    Ok(Json(view(&config, names)))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/providers/{name}", tag = "providers", params(("id" = u64, Path, description = "Tenant id"), ("name" = ProviderName, Path, description = "Which provider")), responses((status = 200, description = "Settings, and which secrets are set", body = ProviderView)), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<ProviderView>> {
    caller.require(Role::TenantAdmin)?;
    let tenant = visible(&state, &caller, &id).await?;
    let config =
        state.store.get_provider(tenant.id, kind(&name)?).await?.ok_or_else(|| ApiError::not_found("provider"))?;
    Ok(Json(view(&config, secret_names(&state, &config))))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/providers", tag = "providers", params(("id" = u64, Path, description = "Tenant id")), responses((status = 200, description = "The tenant's providers, secrets by name only", body = ProviderList)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ProviderList>> {
    caller.require(Role::TenantAdmin)?;
    let tenant = visible(&state, &caller, &id).await?;
    let configs = state.store.list_providers(tenant.id).await?;
    Ok(Json(ProviderList { items: configs.iter().map(|c| view(c, secret_names(&state, c))).collect() }))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/providers/{name}", tag = "providers", params(("id" = u64, Path, description = "Tenant id"), ("name" = ProviderName, Path, description = "Which provider")), responses((status = 204, description = "Removed (its senders are free for other tenants)")), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::TenantAdmin)?;
    let tenant = visible(&state, &caller, &id).await?;
    if state.store.delete_provider(tenant.id, kind(&name)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("provider"))
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants/{id}/providers", get(list))
        .route("/v1/tenants/{id}/providers/{name}", get(show).put(put).delete(delete))
}
