//! `/webhooks/whatsapp`: Meta's verification handshake (GET) and signed status callbacks
//! (POST). The signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with the tenant's
//! app secret) is checked in constant time before anything in the body is acted on. Statuses go
//! to `receipts.inbound` as the signing tenant's receipts (reconcile applies them to that
//! tenant's messages only); an inbound "STOP" suppresses the sender for the tenant.
//!
//! A POST for a phone number id no tenant owns is answered 200 and dropped (counted as
//! `herald_webhooks_unknown_sender_total`): an error would make Meta retry it and eventually
//! disable the app's subscription. The verification GET finds its tenant by a blind index of
//! the verify token, without opening anyone's sealed secrets.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, KeyInit, Mac};
use pipeline::{topics, Emitter};
use schemas::{MessageKey, Receipt, ReceiptBatch, ReceiptStatus, TenantId};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use storage::secrets::aad;
use storage::ProviderKind;

/// Meta's verification handshake parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct Verify {
    /// `subscribe`.
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    /// Echoed back when the token matches.
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
    /// A tenant's WhatsApp `verify_token`.
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
}

#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "webhooks", params(Verify), responses((status = 200, description = "The challenge, as sent", body = String, content_type = "text/plain")))]
pub(crate) async fn verify(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<(StatusCode, String)> {
    let q = Verify {
        mode: q.get("hub.mode").cloned(),
        challenge: q.get("hub.challenge").cloned(),
        verify_token: q.get("hub.verify_token").cloned(),
    };
    let (Some("subscribe"), Some(challenge), Some(token)) = (q.mode.as_deref(), q.challenge, q.verify_token) else {
        return Err(ApiError::forbidden("verification failed"));
    };
    // An exact match on a keyed digest: no secret is opened, no tenant is scanned.
    let index = state.secrets.blind_index(crate::routes::providers::VERIFY_TOKEN_INDEX, &token);
    match state.store.find_verify_token(&index).await? {
        Some(_) if !token.is_empty() => Ok((StatusCode::OK, challenge)),
        _ => Err(ApiError::forbidden("verification failed")),
    }
}

/// The opened secrets of a tenant's provider, if it has one configured.
pub(crate) async fn provider_secrets(
    state: &AppState,
    tenant: TenantId,
    kind: ProviderKind,
) -> ApiResult<Option<BTreeMap<String, String>>> {
    let Some(config) = state.store.get_provider(tenant, kind).await? else { return Ok(None) };
    match state.secrets.open(&aad(tenant, kind.as_str()), &config.secrets) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::error!(%tenant, provider = kind.as_str(), error = %e, "provider secrets do not open");
            Ok(None)
        }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signature_valid(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else { return false };
    let Ok(expected) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    entry: Vec<Entry>,
}
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}
#[derive(Deserialize)]
struct Change {
    value: Option<ChangeValue>,
}
#[derive(Deserialize)]
struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<Status>,
    #[serde(default)]
    messages: Vec<Inbound>,
}
#[derive(Deserialize)]
struct Metadata {
    phone_number_id: String,
}
#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    timestamp: Option<String>,
    biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    errors: Vec<StatusError>,
}
#[derive(Deserialize)]
struct StatusError {
    code: Option<i64>,
    title: Option<String>,
}
#[derive(Deserialize)]
struct Inbound {
    from: String,
    text: Option<InboundText>,
}
#[derive(Deserialize)]
struct InboundText {
    body: String,
}

#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "webhooks", params(("X-Hub-Signature-256" = String, Header, description = "`sha256=<hex HMAC-SHA256 of the raw body with the tenant's app secret>`")), request_body(content = Object, description = "Meta's webhook envelope (`entry[].changes[].value` with `metadata.phone_number_id`, `statuses`, `messages`)"), responses((status = 200, description = "Accepted (also for a phone number id no tenant owns: dropped and counted)")))]
pub(crate) async fn receive(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing X-Hub-Signature-256"))?;
    // Parsed only to find whose secret signs it; nothing is acted on before the check.
    let envelope: Envelope =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
    let values: Vec<&ChangeValue> =
        envelope.entry.iter().flat_map(|e| &e.changes).filter_map(|c| c.value.as_ref()).collect();
    let mut owners = Vec::with_capacity(values.len());
    for value in &values {
        owners.push(match &value.metadata {
            Some(m) => state.store.find_sender(ProviderKind::WhatsApp, &m.phone_number_id).await?,
            None => None,
        });
    }
    let known: Vec<TenantId> = owners.iter().flatten().copied().collect();
    let Some(&tenant_id) = known.first() else {
        // Nobody's phone number: acknowledged and dropped, so Meta does not retry forever.
        state.metrics.webhook_unknown_senders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("WhatsApp webhook for a phone_number_id no tenant owns; dropped");
        return Ok(StatusCode::OK);
    };
    let secrets = provider_secrets(&state, tenant_id, ProviderKind::WhatsApp).await?.unwrap_or_default();
    let secret = secrets.get("app_secret").map(String::as_str).unwrap_or_default();
    // Every known phone number in one POST must belong to the tenant whose secret signed it.
    if secret.is_empty() || !signature_valid(secret, &body, signature) || known.iter().any(|o| *o != tenant_id) {
        return Err(ApiError::unauthorized("bad signature"));
    }
    let mut receipts = Vec::new();
    for (value, owner) in values.into_iter().zip(owners) {
        if owner != Some(tenant_id) {
            state.metrics.webhook_unknown_senders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        for s in &value.statuses {
            let status = match s.status.as_str() {
                "sent" => ReceiptStatus::Sent,
                "delivered" => ReceiptStatus::Delivered,
                "read" => ReceiptStatus::Read,
                "failed" => ReceiptStatus::Failed,
                _ => continue, // e.g. "deleted", "warning": nothing to reconcile
            };
            let key = s
                .biz_opaque_callback_data
                .as_deref()
                .and_then(MessageKey::from_callback)
                .filter(|k| k.tenant == tenant_id);
            let at_ms = s
                .timestamp
                .as_deref()
                .and_then(|t| t.parse::<u64>().ok())
                .and_then(|t| t.checked_mul(1000))
                .unwrap_or_else(schemas::now_ms);
            let error =
                s.errors.first().map(|e| format!("{}: {}", e.code.unwrap_or(0), e.title.clone().unwrap_or_default()));
            receipts.push(Receipt {
                provider: "whatsapp".into(),
                provider_message_id: s.id.clone(),
                key,
                status,
                at_ms,
                error,
            });
        }
        for m in &value.messages {
            if m.text.as_ref().is_some_and(|t| t.body.trim().eq_ignore_ascii_case("stop")) {
                let address = crate::validate::address(&format!("+{}", m.from.trim_start_matches('+')))
                    .unwrap_or_else(|_| m.from.clone());
                state.store.put_suppression(tenant_id, &address).await?;
            }
        }
    }
    if !receipts.is_empty() {
        let mut out = Emitter::new(state.topics.clone());
        out.set_headers(crate::trace::current_headers());
        out.emit(&topics::RECEIPTS, tenant_id.0, &ReceiptBatch { tenant: tenant_id, receipts })?;
        out.flush().await?;
    }
    Ok(StatusCode::OK)
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/webhooks/whatsapp", get(verify).post(receive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"{}");
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid("s3cret", b"{}", &good));
        assert!(!signature_valid("other", b"{}", &good));
        assert!(!signature_valid("s3cret", b"{ }", &good));
        assert!(!signature_valid("s3cret", b"{}", "sha256=zz"));
        assert!(!signature_valid("s3cret", b"{}", "md5=00"));
    }
}
