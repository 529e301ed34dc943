//! `Idempotency-Key` on creates and sends: the same key with the same request replays the
//! original response; the same key with a different request is refused (422).
//!
//! The key is reserved atomically in the store before the request runs (one compare-and-set,
//! [`storage::SharedState::reserve_idempotency`]), so concurrent requests with one key run it
//! once in every deployment: the others get 409 `idempotency_in_progress` while it runs, and
//! the stored response after. A request that fails gives the key back; responses are kept for
//! the configured TTL (24 h by default). A reservation lapses after [`LEASE`] so a process that
//! died mid-request does not hold the key forever.

use crate::error::{ApiError, ApiResult};
use crate::{AppState, Caller};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::TenantId;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::Duration;
use storage::{IdempotencyRecord, Reservation};

/// How long a reservation holds a key while its request runs.
pub const LEASE: Duration = Duration::from_secs(60);

/// The header, as documented in the OpenAPI document.
pub const HEADER: &str = "idempotency-key";

/// Runs `create` at most once per (tenant, caller, key); replays its stored answer afterwards.
pub async fn once<F, Fut>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: &str,
    body: &[u8],
    create: F,
) -> ApiResult<Response>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<(StatusCode, serde_json::Value)>>,
{
    let key = match headers.get(HEADER) {
        None => {
            let (status, value) = create().await?;
            return Ok((status, axum::Json(value)).into_response());
        }
        Some(k) => k
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1-255 visible ASCII characters",
                )
            })?,
    };
    // Platform admins acting outside a tenant (creating tenants) share the platform scope 0.
    let tenant = caller.tenant().unwrap_or(TenantId(0));
    let mut hasher = Sha256::new();
    hasher.update(request.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let request_hash = hex::encode(hasher.finalize());
    let now = schemas::now_ms();
    let (lease, ttl) = (LEASE.as_millis() as u64, state.idempotency_ttl.as_millis() as u64);
    match state.state.reserve_idempotency(tenant, &caller.sub, key, &request_hash, now, lease, ttl).await? {
        Reservation::Reserved => {}
        Reservation::InProgress => {
            return Err(ApiError::conflict(
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still running; retry later for its response",
            ))
        }
        Reservation::Mismatch => {
            return Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ))
        }
        Reservation::Replay(previous) => {
            let status = StatusCode::from_u16(previous.status).unwrap_or(StatusCode::OK);
            let mut response = (status, previous.body).into_response();
            let headers = response.headers_mut();
            headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
            headers.insert("idempotent-replay", axum::http::HeaderValue::from_static("true"));
            return Ok(response);
        }
    }
    match create().await {
        Ok((status, value)) => {
            let record = IdempotencyRecord {
                request_hash,
                status: status.as_u16(),
                body: serde_json::to_vec(&value).map_err(ApiError::internal)?,
                created_ms: now,
            };
            state.state.complete_idempotency(tenant, &caller.sub, key, &record).await?;
            Ok((status, axum::Json(value)).into_response())
        }
        Err(e) => {
            // Nothing was created: the key is free for a retry.
            state.state.release_idempotency(tenant, &caller.sub, key).await?;
            Err(e)
        }
    }
}
