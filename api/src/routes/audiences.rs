//! `/v1/audiences`: audiences, JSON recipient batches, and CSV import (see `import`).

use super::import;
use crate::error::{parse_id, parse_json, ApiError, ApiResult};
use crate::{idempotency, validate, AppState, Caller, Role};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use schemas::{now_ms, AudienceId};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use storage::{Audience, NewRecipient};

/// The largest CSV body accepted by the import endpoint.
pub const CSV_BODY_LIMIT: usize = 2 << 30;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAudience {
    name: String,
}

fn view(a: &Audience) -> Value {
    json!({"id": a.id.0, "name": a.name, "recipient_count": a.recipient_count, "created_ms": a.created_ms})
}

#[utoipa::path(post, path = "/v1/audiences", tag = "audiences", request_body = CreateAudience, responses((status = 201, description = "Audience created"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    let req: CreateAudience = parse_json(&body)?;
    crate::validate::name(&req.name)?;
    idempotency::once(&state, &caller, &headers, "POST /v1/audiences", &body, || async {
        let id = AudienceId(state.store.next_id("audience").await?);
        let audience =
            Audience { id, tenant, name: req.name, recipient_count: 0, next_recipient_id: 0, created_ms: now_ms() };
        state.store.put_audience(&audience).await?;
        Ok((StatusCode::CREATED, view(&audience)))
    })
    .await
}

#[utoipa::path(get, path = "/v1/audiences", tag = "audiences", responses((status = 200, description = "Audiences of the tenant"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    let audiences = state.store.list_audiences(caller.tenant()?).await?;
    Ok(Json(json!({"items": audiences.iter().map(view).collect::<Vec<_>>()})))
}

/// Loads an audience of the caller's tenant.
pub async fn owned(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Audience> {
    let id = AudienceId(parse_id(raw, "audience")?);
    state.store.get_audience(caller.tenant()?, id).await?.ok_or_else(|| ApiError::not_found("audience"))
}

#[utoipa::path(get, path = "/v1/audiences/{id}", tag = "audiences", responses((status = 200, description = "The audience with its recipient count"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(view(&owned(&state, &caller, &id).await?)))
}

/// Turns a JSON recipient (`{"address": ..., other string fields...}`) into a NewRecipient.
fn recipient(value: Value) -> Result<NewRecipient, String> {
    let Value::Object(fields) = value else { return Err("each recipient must be an object".into()) };
    let mut address = None;
    let mut attrs = Vec::new();
    for (k, v) in fields {
        let text = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => return Err(format!("field {k:?} must be a string, number or boolean")),
        };
        if k == "address" {
            address = Some(validate::address(&text)?);
        } else {
            attrs.push((k, text));
        }
    }
    Ok(NewRecipient { address: address.ok_or("missing \"address\"")?, attrs })
}

#[utoipa::path(post, path = "/v1/audiences/{id}/recipients", tag = "audiences", request_body = Vec<serde_json::Value>, responses((status = 200, description = "{imported, rejected, duplicates, errors}"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn add_recipients(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Operator)?;
    let audience = owned(&state, &caller, &id).await?;
    let rows: Vec<Value> = parse_json(&body)?;
    if rows.len() > 10_000 {
        return Err(ApiError::unprocessable(
            "too_many_recipients",
            "at most 10,000 recipients per request; use CSV import",
        ));
    }
    let mut good = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for (index, row) in rows.into_iter().enumerate() {
        match recipient(row) {
            Ok(r) => good.push(r),
            Err(reason) => errors.push(json!({"index": index, "reason": reason})),
        }
    }
    let rejected = errors.len();
    let added = state.store.add_recipients(audience.tenant, audience.id, good).await?;
    errors.truncate(100);
    Ok(Json(json!({"imported": added.added, "rejected": rejected, "duplicates": added.duplicates, "errors": errors})))
}

#[utoipa::path(post, path = "/v1/audiences/{id}/import", tag = "audiences", request_body(content = String, content_type = "text/csv"), responses((status = 200, description = "{imported, rejected, duplicates, errors: [{line, reason}]}"), (status = 413, description = "Body too large"), (status = 415, description = "Not text/csv"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn import_csv(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Operator)?;
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("text/csv") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: text/csv",
        ));
    }
    let audience = owned(&state, &caller, &id).await?;
    let report = import::csv(&state, &audience, body.into_data_stream()).await?;
    Ok(Json(serde_json::to_value(report).map_err(ApiError::internal)?))
}

pub fn routes() -> Router<Arc<AppState>> {
    let _ = Map::<String, Value>::new;
    Router::new()
        .route("/v1/audiences", get(list).post(create))
        .route("/v1/audiences/{id}", get(show))
        .route("/v1/audiences/{id}/recipients", post(add_recipients))
        .route(
            "/v1/audiences/{id}/import",
            post(import_csv).layer(tower_http::limit::RequestBodyLimitLayer::new(CSV_BODY_LIMIT)),
        )
}
