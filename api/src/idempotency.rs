//! `Idempotency-Key` on creates and sends: the same key with the same request replays the
//! original response; the same key with a different request is refused (422).

use crate::error::{ApiError, ApiResult};
use crate::{AppState, Caller};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::future::Future;
use storage::IdempotencyRecord;

/// Runs `create` at most once per (caller, key); replays its stored answer afterwards.
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
    let key = match headers.get("idempotency-key") {
        None => {
            let (status, value) = create().await?;
            return Ok((status, axum::Json(value)).into_response());
        }
        Some(k) => k.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
            ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1-255 visible characters")
        })?,
    };
    let scope = format!("{}:{}", caller.tenant().map(|t| t.0).unwrap_or(0), caller.sub);
    let mut hasher = Sha256::new();
    hasher.update(request.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let request_hash = hex::encode(hasher.finalize());
    if let Some(previous) = state.store.get_idempotency(&scope, key).await? {
        if previous.request_hash != request_hash {
            return Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ));
        }
        let status = StatusCode::from_u16(previous.status).unwrap_or(StatusCode::OK);
        let mut response = (status, previous.body).into_response();
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, "application/json".parse().expect("static header"));
        response.headers_mut().insert("idempotent-replay", "true".parse().expect("static header"));
        return Ok(response);
    }
    let (status, value) = create().await?;
    let record = IdempotencyRecord {
        request_hash,
        status: status.as_u16(),
        body: serde_json::to_vec(&value).map_err(ApiError::internal)?,
        created_ms: schemas::now_ms(),
    };
    state.store.put_idempotency(&scope, key, &record).await?;
    Ok((status, axum::Json(value)).into_response())
}
