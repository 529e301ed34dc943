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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use storage::{Audience, NewRecipient};

/// The largest CSV body accepted by the import endpoint.
pub const CSV_BODY_LIMIT: usize = 2 << 30;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAudience {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AudienceView {
    pub id: u64,
    pub name: String,
    pub recipient_count: u64,
    pub created_ms: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AudienceList {
    pub items: Vec<AudienceView>,
}

fn view(a: &Audience) -> AudienceView {
    AudienceView { id: a.id.0, name: a.name.clone(), recipient_count: a.recipient_count, created_ms: a.created_ms }
}

/// A recipient for `POST /v1/audiences/{id}/recipients`: an `address` (E.164 phone number or
/// email) and any other fields as template variables (strings, numbers or booleans, each at
/// most 4 KiB; null fields are ignored).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct RecipientBody {
    #[schema(min_length = 1, max_length = 320)]
    address: String,
}

/// What adding recipients did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecipientsReport {
    pub imported: u64,
    pub rejected: u64,
    /// Addresses already in the audience (or twice in the request): skipped.
    pub duplicates: u64,
    /// The first 100 rejected recipients, by their position in the request.
    pub errors: Vec<RecipientError>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecipientError {
    pub index: u64,
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/audiences", tag = "audiences", request_body = CreateAudience, responses((status = 201, description = "Audience created", body = AudienceView)), security(("bearer" = [])))]
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
        let id = AudienceId(state.state.next_id("audience").await?);
        let audience =
            Audience { id, tenant, name: req.name, recipient_count: 0, next_recipient_id: 0, created_ms: now_ms() };
        state.store.put_audience(&audience).await?;
        Ok((StatusCode::CREATED, crate::to_value(view(&audience))?))
    })
    .await
}

#[utoipa::path(get, path = "/v1/audiences", tag = "audiences", responses((status = 200, description = "Audiences of the tenant", body = AudienceList)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<AudienceList>> {
    let audiences = state.store.list_audiences(caller.tenant()?).await?;
    Ok(Json(AudienceList { items: audiences.iter().map(view).collect() }))
}

/// Loads an audience of the caller's tenant.
pub async fn owned(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Audience> {
    let id = AudienceId(parse_id(raw, "audience")?);
    state.store.get_audience(caller.tenant()?, id).await?.ok_or_else(|| ApiError::not_found("audience"))
}

#[utoipa::path(get, path = "/v1/audiences/{id}", tag = "audiences", params(("id" = u64, Path, description = "Audience id")), responses((status = 200, description = "The audience with its recipient count", body = AudienceView)), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AudienceView>> {
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
            validate::attribute(&k, &text)?;
            attrs.push((k, text));
        }
    }
    Ok(NewRecipient { address: address.ok_or("missing \"address\"")?, attrs })
}

#[utoipa::path(post, path = "/v1/audiences/{id}/recipients", tag = "audiences", params(("id" = u64, Path, description = "Audience id")), request_body(content = Vec<RecipientBody>, description = "At most 10,000 recipients"), responses((status = 200, description = "Added; rejected recipients are reported by index", body = RecipientsReport)), security(("bearer" = [])))]
pub(crate) async fn add_recipients(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RecipientsReport>> {
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
            Err(reason) => errors.push(RecipientError { index: index as u64, reason }),
        }
    }
    let rejected = errors.len();
    let lease = import::ImportLease::take(&state, &audience).await?;
    let added = state.store.add_recipients(audience.tenant, audience.id, good).await;
    lease.release(&state).await;
    let added = added?;
    errors.truncate(100);
    Ok(Json(RecipientsReport {
        imported: added.added,
        rejected: rejected as u64,
        duplicates: added.duplicates,
        errors,
    }))
}

#[utoipa::path(post, path = "/v1/audiences/{id}/import", tag = "audiences", params(("id" = u64, Path, description = "Audience id")), request_body(content = String, content_type = "text/csv", description = "A header row with an `address` column; other columns become template variables (each value at most 4 KiB). Up to 2 GiB, streamed."), responses((status = 200, description = "Imported; bad rows are reported with their line", body = import::ImportReport)), security(("bearer" = [])))]
pub(crate) async fn import_csv(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<import::ImportReport>> {
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
    Ok(Json(import::csv(&state, &audience, body.into_data_stream()).await?))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/audiences", get(list).post(create))
        .route("/v1/audiences/{id}", get(show))
        .route("/v1/audiences/{id}/recipients", post(add_recipients))
        .route(
            "/v1/audiences/{id}/import",
            post(import_csv).layer(tower_http::limit::RequestBodyLimitLayer::new(CSV_BODY_LIMIT)),
        )
}
