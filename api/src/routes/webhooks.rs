//! `/webhooks/whatsapp`: Meta's verification handshake (GET) and signed status callbacks
//! (POST). The signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with the tenant's
//! app secret) is checked in constant time before anything in the body is acted on. Statuses go
//! to `receipts.inbound`; an inbound "STOP" suppresses the sender for the tenant.

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

#[derive(Deserialize)]
pub(crate) struct Verify {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
}

#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "webhooks", responses((status = 200, description = "The challenge"), (status = 403, description = "Verify token mismatch")))]
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
    // A rare handshake: every tenant with a WhatsApp provider is checked.
    let mut known = false;
    for tenant in state.store.list_tenants().await? {
        if let Some(secrets) = provider_secrets(&state, tenant.id, ProviderKind::WhatsApp).await? {
            let expected = secrets.get("verify_token").map(String::as_bytes).unwrap_or_default();
            known |= !expected.is_empty() && constant_time_eq(expected, token.as_bytes());
        }
    }
    if known {
        Ok((StatusCode::OK, challenge))
    } else {
        Err(ApiError::forbidden("verification failed"))
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

#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "webhooks", request_body = serde_json::Value, responses((status = 200, description = "Accepted"), (status = 401, description = "Bad signature")))]
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
    let phone_ids: Vec<&str> = envelope
        .entry
        .iter()
        .flat_map(|e| &e.changes)
        .filter_map(|c| c.value.as_ref()?.metadata.as_ref().map(|m| m.phone_number_id.as_str()))
        .collect();
    let mut owners = Vec::with_capacity(phone_ids.len());
    for id in &phone_ids {
        owners.push(state.store.find_sender(ProviderKind::WhatsApp, id).await?);
    }
    let Some(Some(tenant_id)) = owners.first().copied() else {
        return Err(ApiError::unauthorized("unknown phone_number_id"));
    };
    let secrets = provider_secrets(&state, tenant_id, ProviderKind::WhatsApp).await?.unwrap_or_default();
    let secret = secrets.get("app_secret").map(String::as_str).unwrap_or_default();
    // Every phone number in one POST must belong to the tenant whose secret signed it.
    if secret.is_empty() || !signature_valid(secret, &body, signature) || owners.iter().any(|o| *o != Some(tenant_id)) {
        return Err(ApiError::unauthorized("bad signature"));
    }
    let mut receipts = Vec::new();
    for value in envelope.entry.iter().flat_map(|e| &e.changes).filter_map(|c| c.value.as_ref()) {
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
                .map(|t| t * 1000)
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
        out.emit(&topics::RECEIPTS, tenant_id, &ReceiptBatch { receipts })?;
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
