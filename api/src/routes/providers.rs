//! `/v1/tenants/{id}/providers/{name}`: a tenant's provider settings (`whatsapp`, `sms`,
//! `email`, `webhook`). Tenant admins manage their own, platform admins any. Secrets
//! (`access_token`, `app_secret`, `verify_token`, `auth_token`, `password`, `signing_secret`)
//! are sealed with AES-256-GCM before they are stored and never returned: GET shows which are
//! set, not what they are. A PUT replaces the whole configuration (and resets the senders'
//! pacing state, including senders the provider had stopped).

use crate::error::{parse_json, ApiError, ApiResult};
use crate::routes::tenants::visible;
use crate::{AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use schemas::now_ms;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use storage::secrets::aad;
use storage::{ProviderConfig, ProviderKind, ProviderSettings, SenderSettings, SmtpTls};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SenderBody {
    /// The phone number id (WhatsApp), from-number (SMS) or from-address (email).
    #[serde(alias = "phone_number_id", alias = "from")]
    id: String,
    rate_limit_per_s: Option<u32>,
    /// Calls above the rate allowed in any second; default 10% of the rate (at least 1).
    burst: Option<u32>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhatsAppBody {
    base_url: String,
    api_version: String,
    access_token: String,
    app_secret: String,
    verify_token: String,
    senders: Vec<SenderBody>,
    daily_unique_limit: Option<u64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmsBody {
    base_url: String,
    account_sid: String,
    auth_token: String,
    /// Herald's public base URL; status callbacks go to `{it}/webhooks/sms/{tenant}`.
    status_callback_url: Option<String>,
    senders: Vec<SenderBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailBody {
    host: String,
    port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    tls: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// `mailto:` or `https:` target; `{{ address }}` becomes the recipient's address.
    list_unsubscribe: String,
    senders: Vec<SenderBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    url: String,
    signing_secret: String,
    rate_limit_per_s: Option<u32>,
    burst: Option<u32>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_provider", message)
}

fn http_url(field: &str, url: &str) -> ApiResult<()> {
    let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 2_048 && plausible_url(url);
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{field} must be an http(s) URL")))
    }
}

/// A light URL check: a host after the scheme, no whitespace.
fn plausible_url(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty() && !url.chars().any(char::is_whitespace)
}

fn secret(field: &str, value: String) -> ApiResult<(String, String)> {
    if value.is_empty() || value.len() > 4_096 {
        return Err(invalid(format!("{field} must be 1-4096 characters")));
    }
    Ok((field.to_string(), value))
}

fn senders(list: Vec<SenderBody>, check_id: impl Fn(&str) -> ApiResult<()>) -> ApiResult<Vec<SenderSettings>> {
    if list.is_empty() || list.len() > 100 {
        return Err(invalid("senders must list 1-100 senders"));
    }
    let mut seen = HashSet::new();
    list.into_iter()
        .map(|s| {
            check_id(&s.id)?;
            if !seen.insert(s.id.clone()) {
                return Err(invalid(format!("sender {:?} is listed twice", s.id)));
            }
            let rate = s.rate_limit_per_s.filter(|r| *r > 0);
            if rate.is_some_and(|r| r > 100_000) {
                return Err(invalid("rate_limit_per_s must be 1-100000"));
            }
            let burst = s.burst.unwrap_or_else(|| rate.map(|r| (r / 10).max(1)).unwrap_or(0));
            if rate.is_some_and(|r| burst > r) {
                return Err(invalid("burst must not exceed rate_limit_per_s"));
            }
            Ok(SenderSettings { id: s.id, rate_limit_per_s: rate, burst })
        })
        .collect()
}

fn phone_number_id(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(invalid(format!("phone_number_id {id:?} must be 1-64 letters, digits, '_' or '-'")));
    }
    Ok(())
}

/// Parses a PUT body for `kind` into settings and the secrets to seal.
fn parse(kind: ProviderKind, body: &[u8]) -> ApiResult<(ProviderSettings, BTreeMap<String, String>)> {
    Ok(match kind {
        ProviderKind::WhatsApp => {
            let b: WhatsAppBody = parse_json(body)?;
            http_url("base_url", &b.base_url)?;
            let version = b.api_version.trim_start_matches('v');
            if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(invalid("api_version must look like v21.0"));
            }
            if b.daily_unique_limit == Some(0) {
                return Err(invalid("daily_unique_limit must be positive (omit it for unlimited)"));
            }
            let secrets = BTreeMap::from([
                secret("access_token", b.access_token)?,
                secret("app_secret", b.app_secret)?,
                secret("verify_token", b.verify_token)?,
            ]);
            let settings = ProviderSettings::WhatsApp {
                base_url: b.base_url,
                api_version: format!("v{version}"),
                senders: senders(b.senders, phone_number_id)?,
                daily_unique_limit: b.daily_unique_limit,
            };
            (settings, secrets)
        }
        ProviderKind::Sms => {
            let b: SmsBody = parse_json(body)?;
            http_url("base_url", &b.base_url)?;
            if let Some(u) = &b.status_callback_url {
                http_url("status_callback_url", u)?;
            }
            phone_number_id(&b.account_sid).map_err(|_| invalid("account_sid must be 1-64 letters or digits"))?;
            let from = |id: &str| {
                crate::validate::address(id)
                    .ok()
                    .filter(|a| a.starts_with('+'))
                    .map(|_| ())
                    .ok_or_else(|| invalid(format!("sender {id:?} must be an E.164 phone number")))
            };
            let secrets = BTreeMap::from([secret("auth_token", b.auth_token)?]);
            let settings = ProviderSettings::Sms {
                base_url: b.base_url,
                account_sid: b.account_sid,
                status_callback_url: b.status_callback_url,
                senders: senders(b.senders, from)?,
            };
            (settings, secrets)
        }
        ProviderKind::Email => {
            let b: EmailBody = parse_json(body)?;
            if b.host.is_empty() || b.host.len() > 253 || b.host.contains(char::is_whitespace) {
                return Err(invalid("host must be a host name"));
            }
            let tls = match b.tls.as_deref().unwrap_or("starttls") {
                "starttls" => SmtpTls::StartTls,
                "tls" => SmtpTls::Tls,
                "none" => SmtpTls::None,
                other => return Err(invalid(format!("tls {other:?} must be starttls, tls or none"))),
            };
            let port = b.port.unwrap_or(match tls {
                SmtpTls::Tls => 465,
                SmtpTls::StartTls => 587,
                SmtpTls::None => 25,
            });
            if !(b.list_unsubscribe.starts_with("mailto:") || b.list_unsubscribe.starts_with("https://")) {
                return Err(invalid("list_unsubscribe must be a mailto: or https: URL"));
            }
            let from = |id: &str| {
                crate::validate::address(id)
                    .ok()
                    .filter(|a| a.contains('@'))
                    .map(|_| ())
                    .ok_or_else(|| invalid(format!("sender {id:?} must be an email address")))
            };
            let mut secrets = BTreeMap::new();
            if let Some(p) = b.password {
                secrets.extend([secret("password", p)?]);
            }
            let settings = ProviderSettings::Email {
                host: b.host,
                port,
                tls,
                username: b.username,
                list_unsubscribe: b.list_unsubscribe,
                senders: senders(b.senders, from)?,
            };
            (settings, secrets)
        }
        ProviderKind::Webhook => {
            let b: WebhookBody = parse_json(body)?;
            http_url("url", &b.url)?;
            let one = vec![SenderBody { id: "webhook".into(), rate_limit_per_s: b.rate_limit_per_s, burst: b.burst }];
            let secrets = BTreeMap::from([secret("signing_secret", b.signing_secret)?]);
            (ProviderSettings::Webhook { url: b.url, senders: senders(one, |_| Ok(()))? }, secrets)
        }
    })
}

/// A provider configuration as the API shows it: settings, and the names of the secrets set.
pub fn view(config: &ProviderConfig, secret_names: &[&str]) -> Value {
    let senders: Vec<Value> = config
        .settings
        .senders()
        .iter()
        .map(|s| json!({"id": s.id, "rate_limit_per_s": s.rate_limit_per_s, "burst": s.burst}))
        .collect();
    let mut v = match &config.settings {
        ProviderSettings::WhatsApp { base_url, api_version, daily_unique_limit, .. } => {
            json!({"base_url": base_url, "api_version": api_version, "daily_unique_limit": daily_unique_limit})
        }
        ProviderSettings::Sms { base_url, account_sid, status_callback_url, .. } => {
            json!({"base_url": base_url, "account_sid": account_sid, "status_callback_url": status_callback_url})
        }
        ProviderSettings::Email { host, port, tls, username, list_unsubscribe, .. } => json!({
            "host": host, "port": port, "username": username, "list_unsubscribe": list_unsubscribe,
            "tls": match tls { SmtpTls::None => "none", SmtpTls::StartTls => "starttls", SmtpTls::Tls => "tls" },
        }),
        ProviderSettings::Webhook { url, .. } => json!({"url": url}),
    };
    v["name"] = json!(config.settings.kind().as_str());
    v["tenant"] = json!(config.tenant.0);
    v["senders"] = json!(senders);
    v["secrets_set"] = json!(secret_names);
    v["updated_ms"] = json!(config.updated_ms);
    v
}

fn kind(name: &str) -> ApiResult<ProviderKind> {
    ProviderKind::parse(name).ok_or_else(|| ApiError::not_found("provider"))
}

/// Names of the secrets a stored configuration holds (opened, never shown).
fn secret_names(state: &AppState, config: &ProviderConfig) -> Vec<&'static str> {
    const NAMES: [&str; 6] = ["access_token", "app_secret", "verify_token", "auth_token", "password", "signing_secret"];
    let opened = state.secrets.open(&aad(config.tenant, config.settings.kind().as_str()), &config.secrets);
    let opened = opened.unwrap_or_default();
    NAMES.into_iter().filter(|n| opened.contains_key(*n)).collect()
}

#[utoipa::path(put, path = "/v1/tenants/{id}/providers/{name}", tag = "providers", request_body = Object, responses((status = 200, description = "Stored (secrets sealed, not returned)"), (status = 422, description = "Invalid settings"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(Role::TenantAdmin)?;
    let tenant = visible(&state, &caller, &id).await?;
    let kind = kind(&name)?;
    let (settings, secrets) = parse(kind, &body)?;
    for s in settings.senders() {
        if let Some(owner) = state.store.find_sender(kind, &s.id).await? {
            if owner != tenant.id {
                return Err(ApiError::conflict("sender_taken", format!("sender {:?} belongs to another tenant", s.id)));
            }
        }
    }
    let sealed = state.secrets.seal(&aad(tenant.id, kind.as_str()), &secrets);
    let config = ProviderConfig { tenant: tenant.id, settings, secrets: sealed, updated_ms: now_ms() };
    state.store.put_provider(&config).await?;
    let names: Vec<&str> = secrets.keys().map(String::as_str).collect();
    Ok(Json(view(&config, &names)))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/providers/{name}", tag = "providers", responses((status = 200, description = "Settings without secrets"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::TenantAdmin)?;
    let tenant = visible(&state, &caller, &id).await?;
    let config =
        state.store.get_provider(tenant.id, kind(&name)?).await?.ok_or_else(|| ApiError::not_found("provider"))?;
    Ok(Json(view(&config, &secret_names(&state, &config))))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/providers", tag = "providers", responses((status = 200, description = "The tenant's providers without secrets"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::TenantAdmin)?;
    let tenant = visible(&state, &caller, &id).await?;
    let configs = state.store.list_providers(tenant.id).await?;
    Ok(Json(json!({"items": configs.iter().map(|c| view(c, &secret_names(&state, c))).collect::<Vec<_>>()})))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/providers/{name}", tag = "providers", responses((status = 204, description = "Removed"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
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
