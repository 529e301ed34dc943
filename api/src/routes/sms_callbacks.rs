//! `POST /webhooks/sms/{tenant}?cb=<message key>`: status callbacks of the Twilio-shaped SMS
//! provider. The request is verified like Twilio's `X-Twilio-Signature` — base64 of
//! HMAC-SHA1(auth token, callback URL + every form field name and value in name order) — using
//! the tenant's sealed `auth_token` and the callback URL Herald itself gave the provider, before
//! anything in it is acted on. Statuses become receipts on `receipts.inbound`.

use crate::error::{ApiError, ApiResult};
use crate::routes::webhooks::provider_secrets;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use pipeline::{topics, Emitter};
use schemas::{MessageKey, Receipt, ReceiptBatch, ReceiptStatus, TenantId};
use std::sync::Arc;
use storage::{ProviderKind, ProviderSettings};

/// Twilio's request signature: base64(HMAC-SHA1(token, url + sorted name/value pairs)).
pub fn twilio_signature(token: &str, url: &str, form: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = form.iter().collect();
    pairs.sort();
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()) else { return String::new() };
    mac.update(url.as_bytes());
    for (k, v) in pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[utoipa::path(post, path = "/webhooks/sms/{tenant}", tag = "webhooks", operation_id = "sms_receive", params(("tenant" = u64, Path, description = "The tenant whose SMS provider posts this"), ("cb" = Option<String>, Query, description = "Herald's callback data for the message (set by Herald in StatusCallback)"), ("X-Twilio-Signature" = String, Header, description = "base64 HMAC-SHA1 of the callback URL and the form fields with the tenant's auth token")), request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback fields (`MessageSid`, `MessageStatus`, `ErrorCode`, ...)"), responses((status = 200, description = "Accepted")))]
pub(crate) async fn receive(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing X-Twilio-Signature"))?;
    let tenant = TenantId(tenant.parse().map_err(|_| ApiError::unauthorized("unknown tenant"))?);
    let config = state.store.get_provider(tenant, ProviderKind::Sms).await?;
    let Some(ProviderSettings::Sms { status_callback_url: Some(base), .. }) = config.map(|c| c.settings) else {
        return Err(ApiError::unauthorized("no SMS status callbacks configured for this tenant"));
    };
    let token = provider_secrets(&state, tenant, ProviderKind::Sms).await?.unwrap_or_default();
    let token = token.get("auth_token").map(String::as_str).unwrap_or_default();
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let url = format!("{}{}", base.trim_end_matches('/'), uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let expected = twilio_signature(token, &url, &form);
    if token.is_empty() || !crate::routes::webhooks::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(ApiError::unauthorized("bad signature"));
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let status = match field("MessageStatus").or(field("SmsStatus")) {
        Some("sent") => ReceiptStatus::Sent,
        Some("delivered") => ReceiptStatus::Delivered,
        Some("read") => ReceiptStatus::Read,
        Some("failed" | "undelivered") => ReceiptStatus::Failed,
        // queued / accepted / sending: nothing to reconcile yet.
        _ => return Ok(StatusCode::OK),
    };
    let Some(sid) = field("MessageSid").or(field("SmsSid")) else {
        return Err(ApiError::bad_request("missing_field", "MessageSid is required"));
    };
    let callback: Option<String> = uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "cb").map(|(_, v)| v.into_owned()));
    let key = callback.as_deref().and_then(MessageKey::from_callback).filter(|k| k.tenant == tenant);
    let receipt = Receipt {
        provider: "sms".into(),
        provider_message_id: sid.to_string(),
        key,
        status,
        at_ms: schemas::now_ms(),
        error: field("ErrorCode")
            .filter(|c| !c.is_empty())
            .map(|c| format!("{c}: {}", field("ErrorMessage").unwrap_or(""))),
    };
    let mut out = Emitter::new(state.topics.clone());
    out.set_headers(crate::trace::current_headers());
    out.emit(&topics::RECEIPTS, tenant.0, &ReceiptBatch { tenant, receipts: vec![receipt] })?;
    out.flush().await?;
    Ok(StatusCode::OK)
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/webhooks/sms/{tenant}", post(receive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_the_documented_example() {
        // Twilio's documented example (security docs): token 12345, this URL and these fields.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let form: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(twilio_signature("12345", url, &form), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
    }
}
