//! `/webhooks/whatsapp`: Meta's verification handshake (GET) and signed status callbacks
//! (POST). The signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with the tenant's
//! app secret) is checked in constant time before anything in the body is acted on. What the
//! body means is the provider's knowledge (`stages::deliver::providers::whatsapp::status`);
//! this route finds the owning tenant and its secret and produces the receipts. Statuses go
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
use pipeline::{topics, Emitter};
use schemas::{ReceiptBatch, TenantId};
use serde::Deserialize;
use stages::deliver::providers::whatsapp::status as whatsapp;
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
    let envelope = whatsapp::parse(&body).map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
    let values = envelope.changes();
    let mut owners = Vec::with_capacity(values.len());
    for value in &values {
        owners.push(match value.phone_number_id() {
            Some(id) => state.store.find_sender(ProviderKind::WhatsApp, id).await?,
            None => None,
        });
    }
    let known: Vec<TenantId> = owners.iter().flatten().copied().collect();
    let Some(&tenant_id) = known.first() else {
        // Nobody's phone number: acknowledged and dropped, so Meta does not retry forever.
        state.metrics.webhook_unknown_sender();
        tracing::warn!("WhatsApp webhook for a phone_number_id no tenant owns; dropped");
        return Ok(StatusCode::OK);
    };
    let secrets = provider_secrets(&state, tenant_id, ProviderKind::WhatsApp).await?.unwrap_or_default();
    let secret = secrets.get("app_secret").map(String::as_str).unwrap_or_default();
    // Every known phone number in one POST must belong to the tenant whose secret signed it.
    if !whatsapp::signature_valid(secret, &body, signature) || known.iter().any(|o| *o != tenant_id) {
        return Err(ApiError::unauthorized("bad signature"));
    }
    let mut receipts = Vec::new();
    for (value, owner) in values.into_iter().zip(owners) {
        if owner != Some(tenant_id) {
            state.metrics.webhook_unknown_sender();
            continue;
        }
        receipts.extend(value.receipts(tenant_id));
        for from in value.opt_outs() {
            let address = crate::validate::address(&format!("+{}", from.trim_start_matches('+')))
                .unwrap_or_else(|_| from.to_string());
            state.store.put_suppression(tenant_id, &address).await?;
        }
    }
    if !receipts.is_empty() {
        let mut out = Emitter::new(state.topics.clone());
        out.set_headers(crate::trace::current_headers());
        for batch in ReceiptBatch::by_campaign(tenant_id, receipts) {
            out.emit(&topics::RECEIPTS, &batch)?;
        }
        out.flush().await?;
    }
    Ok(StatusCode::OK)
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/webhooks/whatsapp", get(verify).post(receive))
}
