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
use pipeline::{topics, Emitter};
use schemas::{ReceiptBatch, TenantId};
use stages::deliver::providers::sms::status as sms;
use std::sync::Arc;
use storage::{ProviderKind, ProviderSettings};

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
    if !sms::signature_valid(token, &url, &form, signature) {
        return Err(ApiError::unauthorized("bad signature"));
    }
    let callback: Option<String> = uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "cb").map(|(_, v)| v.into_owned()));
    let receipt = match sms::parse(tenant, &form, callback.as_deref()) {
        sms::Callback::Receipt(r) => r,
        sms::Callback::Pending => return Ok(StatusCode::OK),
        sms::Callback::MissingSid => return Err(ApiError::bad_request("missing_field", "MessageSid is required")),
    };
    let mut out = Emitter::new(state.topics.clone());
    out.set_headers(crate::trace::current_headers());
    out.emit(&topics::RECEIPTS, &ReceiptBatch { tenant, receipts: vec![receipt] })?;
    out.flush().await?;
    Ok(StatusCode::OK)
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/webhooks/sms/{tenant}", post(receive))
}
