//! The bodies of `PUT /v1/tenants/{id}/providers/{name}` and the provider view: what a tenant
//! may configure for each provider, checked into `storage::ProviderSettings` plus the secrets
//! to seal, and the configuration shown back (secrets by name only).

use crate::error::{parse_json, ApiError, ApiResult};
use crate::AppState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use storage::{ProviderConfig, ProviderKind, ProviderSettings, SenderSettings, SmtpTls};

/// A WhatsApp sender: a phone number id, paced on its own.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhoneSender {
    #[serde(alias = "id")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    phone_number_id: String,
    /// Calls per second (absent or null: unpaced).
    #[schema(minimum = 1, maximum = 100000)]
    rate_limit_per_s: Option<u32>,
    /// Calls above the rate allowed in any second: at most the rate; default 10% of it.
    burst: Option<u32>,
}

/// An SMS or email sender: a from-number (E.164) or from-address.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FromSender {
    #[serde(alias = "id")]
    #[schema(min_length = 1, max_length = 320)]
    from: String,
    #[schema(minimum = 1, maximum = 100000)]
    rate_limit_per_s: Option<u32>,
    burst: Option<u32>,
}

/// WhatsApp Cloud API. Secrets: `access_token`, `app_secret`, `verify_token`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhatsAppBody {
    #[schema(min_length = 8, max_length = 2048, pattern = "^https?://")]
    base_url: String,
    #[schema(pattern = r"^v?[0-9]+(\.[0-9]+)*$", max_length = 16)]
    api_version: String,
    #[schema(min_length = 1, max_length = 4096)]
    access_token: String,
    #[schema(min_length = 1, max_length = 4096)]
    app_secret: String,
    #[schema(min_length = 1, max_length = 4096)]
    verify_token: String,
    #[schema(min_items = 1, max_items = 100)]
    senders: Vec<PhoneSender>,
    /// Messaging tier: unique users per rolling 24 h (absent or null: unlimited).
    #[schema(minimum = 1)]
    daily_unique_limit: Option<u64>,
}

/// A Twilio-shaped SMS API. Secret: `auth_token`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmsBody {
    #[schema(min_length = 8, max_length = 2048, pattern = "^https?://")]
    base_url: String,
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    account_sid: String,
    #[schema(min_length = 1, max_length = 4096)]
    auth_token: String,
    /// Herald's public base URL; status callbacks go to `{it}/webhooks/sms/{tenant}`.
    #[schema(min_length = 8, max_length = 2048, pattern = "^https?://")]
    status_callback_url: Option<String>,
    #[schema(min_items = 1, max_items = 100)]
    senders: Vec<FromSender>,
}

/// SMTP transport security.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Starttls,
    Tls,
    None,
}

/// Email over SMTP. Secret: `password` (optional).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailBody {
    #[schema(min_length = 1, max_length = 253, pattern = r"^\S+$")]
    host: String,
    #[schema(minimum = 1)]
    port: Option<u16>,
    /// Default `starttls`.
    #[schema(value_type = Option<TlsMode>)]
    tls: Option<String>,
    #[schema(max_length = 320)]
    username: Option<String>,
    #[schema(min_length = 1, max_length = 4096)]
    password: Option<String>,
    /// `mailto:` or `https:` target; `{{ address }}` becomes the recipient's address.
    #[schema(max_length = 2048, pattern = "^(mailto:|https://)")]
    list_unsubscribe: String,
    #[schema(min_items = 1, max_items = 100)]
    senders: Vec<FromSender>,
}

/// A tenant webhook receiving each message as signed JSON. Secret: `signing_secret`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    #[schema(min_length = 8, max_length = 2048, pattern = "^https?://")]
    url: String,
    #[schema(min_length = 1, max_length = 4096)]
    signing_secret: String,
    #[schema(minimum = 1, maximum = 100000)]
    rate_limit_per_s: Option<u32>,
    burst: Option<u32>,
}

/// The body for each provider name (`whatsapp`, `sms`, `email`, `webhook` in the path).
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum ProviderBody {
    WhatsApp(WhatsAppBody),
    Sms(SmsBody),
    Email(EmailBody),
    Webhook(WebhookBody),
}

/// The provider names of the path.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Whatsapp,
    Sms,
    Email,
    Webhook,
}

/// A sender as stored.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SenderView {
    /// The phone number id, from-number, from-address or `webhook`.
    pub id: String,
    pub rate_limit_per_s: Option<u32>,
    pub burst: u32,
}

/// A provider configuration as the API shows it: its settings, and the names of the secrets
/// that are set (never their values). Fields apply to the provider named.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    #[schema(value_type = ProviderName)]
    pub name: &'static str,
    pub tenant: u64,
    pub senders: Vec<SenderView>,
    pub secrets_set: Vec<&'static str>,
    pub updated_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_unique_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_callback_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<TlsMode>)]
    pub tls: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_unsubscribe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderList {
    pub items: Vec<ProviderView>,
}

/// The secrets a configuration may hold.
pub const SECRET_NAMES: [&str; 6] =
    ["access_token", "app_secret", "verify_token", "auth_token", "password", "signing_secret"];

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
    if value.is_empty() || value.chars().count() > 4_096 {
        return Err(invalid(format!("{field} must be 1-4096 characters")));
    }
    Ok((field.to_string(), value))
}

/// Checks senders (ids by `check_id`, unique, rates 1-100,000, burst ≤ rate).
fn senders(
    list: impl IntoIterator<Item = (String, Option<u32>, Option<u32>)>,
    check_id: impl Fn(&str) -> ApiResult<()>,
) -> ApiResult<Vec<SenderSettings>> {
    let list: Vec<_> = list.into_iter().collect();
    if list.is_empty() || list.len() > 100 {
        return Err(invalid("senders must list 1-100 senders"));
    }
    let mut seen = HashSet::new();
    list.into_iter()
        .map(|(id, rate, burst)| {
            check_id(&id)?;
            if !seen.insert(id.clone()) {
                return Err(invalid(format!("sender {id:?} is listed twice")));
            }
            if rate.is_some_and(|r| r == 0 || r > 100_000) {
                return Err(invalid("rate_limit_per_s must be 1-100000 (absent: unpaced)"));
            }
            let burst = burst.unwrap_or_else(|| rate.map(|r| (r / 10).max(1)).unwrap_or(0));
            if rate.is_some_and(|r| burst > r) || (rate.is_none() && burst > 0) {
                return Err(invalid("burst must not exceed rate_limit_per_s"));
            }
            Ok(SenderSettings { id, rate_limit_per_s: rate, burst })
        })
        .collect()
}

fn phone_number_id(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(invalid(format!("phone_number_id {id:?} must be 1-64 letters, digits, '_' or '-'")));
    }
    Ok(())
}

/// A sender address of the kind `want` says (`+`: E.164 phone number, `@`: email).
fn from_address(id: &str, want: char, what: &str) -> ApiResult<()> {
    crate::validate::address(id)
        .ok()
        .filter(|a| a.contains(want))
        .map(|_| ())
        .ok_or_else(|| invalid(format!("sender {id:?} must be {what}")))
}

/// Parses a PUT body for `kind` into settings and the secrets to seal.
pub(crate) fn parse(kind: ProviderKind, body: &[u8]) -> ApiResult<(ProviderSettings, BTreeMap<String, String>)> {
    let from_senders = |list: Vec<FromSender>| list.into_iter().map(|s| (s.from, s.rate_limit_per_s, s.burst));
    Ok(match kind {
        ProviderKind::WhatsApp => {
            let b: WhatsAppBody = parse_json(body)?;
            http_url("base_url", &b.base_url)?;
            let version = b.api_version.trim_start_matches('v');
            if version.is_empty()
                || version.len() > 15
                || !version.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
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
            let list = b.senders.into_iter().map(|s| (s.phone_number_id, s.rate_limit_per_s, s.burst));
            let settings = ProviderSettings::WhatsApp {
                base_url: b.base_url,
                api_version: format!("v{version}"),
                senders: senders(list, phone_number_id)?,
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
            let secrets = BTreeMap::from([secret("auth_token", b.auth_token)?]);
            let from = |id: &str| from_address(id, '+', "an E.164 phone number");
            let settings = ProviderSettings::Sms {
                base_url: b.base_url,
                account_sid: b.account_sid,
                status_callback_url: b.status_callback_url,
                senders: senders(from_senders(b.senders), from)?,
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
            let port = match b.port {
                Some(0) => return Err(invalid("port must be 1-65535")),
                Some(p) => p,
                None => match tls {
                    SmtpTls::Tls => 465,
                    SmtpTls::StartTls => 587,
                    SmtpTls::None => 25,
                },
            };
            if !(b.list_unsubscribe.starts_with("mailto:") || b.list_unsubscribe.starts_with("https://"))
                || b.list_unsubscribe.len() > 2_048
            {
                return Err(invalid("list_unsubscribe must be a mailto: or https: URL"));
            }
            if b.username.as_ref().is_some_and(|u| u.chars().count() > 320) {
                return Err(invalid("username must be at most 320 characters"));
            }
            let mut secrets = BTreeMap::new();
            if let Some(p) = b.password {
                secrets.extend([secret("password", p)?]);
            }
            let from = |id: &str| from_address(id, '@', "an email address");
            let settings = ProviderSettings::Email {
                host: b.host,
                port,
                tls,
                username: b.username,
                list_unsubscribe: b.list_unsubscribe,
                senders: senders(from_senders(b.senders), from)?,
            };
            (settings, secrets)
        }
        ProviderKind::Webhook => {
            let b: WebhookBody = parse_json(body)?;
            http_url("url", &b.url)?;
            let one = [("webhook".to_string(), b.rate_limit_per_s, b.burst)];
            let secrets = BTreeMap::from([secret("signing_secret", b.signing_secret)?]);
            (ProviderSettings::Webhook { url: b.url, senders: senders(one, |_| Ok(()))? }, secrets)
        }
    })
}

/// Refuses settings whose URLs or SMTP host reach addresses providers may not call.
pub(crate) async fn check_addresses(state: &AppState, settings: &ProviderSettings) -> ApiResult<()> {
    let refused = |e: stages::deliver::providers::address::AddressError| {
        ApiError::unprocessable("address_not_allowed", e.to_string())
    };
    match settings {
        ProviderSettings::WhatsApp { base_url, .. } | ProviderSettings::Sms { base_url, .. } => {
            state.addresses.check_url(base_url).await.map_err(refused)
        }
        ProviderSettings::Webhook { url, .. } => state.addresses.check_url(url).await.map_err(refused),
        ProviderSettings::Email { host, port, .. } => state.addresses.check_host(host, *port).await.map_err(refused),
    }
}

/// The view of a stored configuration, with the names of its set secrets.
pub fn view(config: &ProviderConfig, secrets_set: Vec<&'static str>) -> ProviderView {
    let mut v = ProviderView {
        name: config.settings.kind().as_str(),
        tenant: config.tenant.0,
        senders: config
            .settings
            .senders()
            .iter()
            .map(|s| SenderView { id: s.id.clone(), rate_limit_per_s: s.rate_limit_per_s, burst: s.burst })
            .collect(),
        secrets_set,
        updated_ms: config.updated_ms,
        base_url: None,
        api_version: None,
        daily_unique_limit: None,
        account_sid: None,
        status_callback_url: None,
        host: None,
        port: None,
        tls: None,
        username: None,
        list_unsubscribe: None,
        url: None,
    };
    match &config.settings {
        ProviderSettings::WhatsApp { base_url, api_version, daily_unique_limit, .. } => {
            v.base_url = Some(base_url.clone());
            v.api_version = Some(api_version.clone());
            v.daily_unique_limit = *daily_unique_limit;
        }
        ProviderSettings::Sms { base_url, account_sid, status_callback_url, .. } => {
            v.base_url = Some(base_url.clone());
            v.account_sid = Some(account_sid.clone());
            v.status_callback_url = status_callback_url.clone();
        }
        ProviderSettings::Email { host, port, tls, username, list_unsubscribe, .. } => {
            v.host = Some(host.clone());
            v.port = Some(*port);
            v.tls = Some(match tls {
                SmtpTls::None => "none",
                SmtpTls::StartTls => "starttls",
                SmtpTls::Tls => "tls",
            });
            v.username = username.clone();
            v.list_unsubscribe = Some(list_unsubscribe.clone());
        }
        ProviderSettings::Webhook { url, .. } => v.url = Some(url.clone()),
    }
    v
}
