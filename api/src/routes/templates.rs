//! `/v1/templates`: templates are compiled at create time; syntax errors are a 422.

use crate::error::{parse_id, parse_json, ApiError, ApiResult};
use crate::{idempotency, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use schemas::{Channel, TemplateId, TenantId};
use serde::Deserialize;
use serde_json::{json, Value};
use stages::render::CompiledTemplate;
use std::sync::Arc;
use storage::{Template, WhatsAppComponent, WhatsAppTemplate};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhatsAppBody {
    template_name: String,
    language: String,
    #[serde(default)]
    components: Vec<ComponentBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ComponentBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sub_type: Option<String>,
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    parameters: Vec<ParameterBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParameterBody {
    #[serde(rename = "type")]
    kind: String,
    text: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateBody {
    name: String,
    channel: String,
    body: Option<String>,
    subject: Option<String>,
    html: Option<String>,
    whatsapp: Option<WhatsAppBody>,
}

fn build(tenant: TenantId, id: TemplateId, req: TemplateBody) -> ApiResult<Template> {
    let channel: Channel = req.channel.parse().map_err(|e: String| ApiError::unprocessable("unknown_channel", e))?;
    crate::validate::name(&req.name)?;
    let whatsapp = req
        .whatsapp
        .map(|w| -> ApiResult<WhatsAppTemplate> {
            let components = w
                .components
                .into_iter()
                .map(|c| {
                    if let Some(p) = c.parameters.iter().find(|p| p.kind != "text") {
                        return Err(ApiError::unprocessable(
                            "unsupported_parameter",
                            format!("parameter type {:?} is not supported yet (text only)", p.kind),
                        ));
                    }
                    let kind = match (c.sub_type, c.index) {
                        (Some(sub), Some(index)) => format!("{}:{sub}:{index}", c.kind),
                        _ => c.kind,
                    };
                    Ok(WhatsAppComponent { kind, parameters: c.parameters.into_iter().map(|p| p.text).collect() })
                })
                .collect::<ApiResult<_>>()?;
            Ok(WhatsAppTemplate { template_name: w.template_name, language: w.language, components })
        })
        .transpose()?;
    let template = Template {
        id,
        tenant,
        name: req.name,
        channel,
        body: req.body,
        subject: req.subject,
        html: req.html,
        whatsapp,
    };
    CompiledTemplate::compile(&template).map_err(|e| ApiError::unprocessable("template_invalid", e))?;
    Ok(template)
}

fn view(t: &Template) -> Value {
    json!({
        "id": t.id.0, "name": t.name, "channel": t.channel.as_str(), "body": t.body,
        "subject": t.subject, "html": t.html,
        "whatsapp": t.whatsapp.as_ref().map(|w| json!({
            "template_name": w.template_name, "language": w.language,
            "components": w.components.iter().map(|c| json!({"type": c.kind, "parameters": c.parameters})).collect::<Vec<_>>(),
        })),
    })
}

#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = TemplateBody, responses((status = 201, description = "Template created"), (status = 422, description = "Syntax error or unknown channel"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    let req: TemplateBody = parse_json(&body)?;
    // Validate before taking an id, so a bad template changes nothing.
    build(tenant, TemplateId(0), parse_json(&body)?)?;
    idempotency::once(&state, &caller, &headers, "POST /v1/templates", &body, || async {
        let template = build(tenant, TemplateId(state.store.next_id("template").await?), req)?;
        state.store.put_template(&template).await?;
        Ok((StatusCode::CREATED, view(&template)))
    })
    .await
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates", responses((status = 200, description = "Templates of the tenant"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    let templates = state.store.list_templates(caller.tenant()?).await?;
    Ok(Json(json!({"items": templates.iter().map(view).collect::<Vec<_>>()})))
}

#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", responses((status = 200, description = "The template"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = TemplateId(parse_id(&id, "template")?);
    let t = state.store.get_template(caller.tenant()?, id).await?.ok_or_else(|| ApiError::not_found("template"))?;
    Ok(Json(view(&t)))
}

#[utoipa::path(put, path = "/v1/templates/{id}", tag = "templates", request_body = TemplateBody, responses((status = 200, description = "Replaced"), (status = 422, description = "Invalid template"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn replace(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    let id = TemplateId(parse_id(&id, "template")?);
    state.store.get_template(tenant, id).await?.ok_or_else(|| ApiError::not_found("template"))?;
    let template = build(tenant, id, parse_json(&body)?)?;
    state.store.put_template(&template).await?;
    Ok(Json(view(&template)))
}

#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates", responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed request"), (status = 401, description = "Missing or invalid token"), (status = 403, description = "Role too low"), (status = 404, description = "Not found (or another tenant's)")), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Operator)?;
    let id = TemplateId(parse_id(&id, "template")?);
    if state.store.delete_template(caller.tenant()?, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("template"))
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/templates", get(list).post(create))
        .route("/v1/templates/{id}", get(show).put(replace).delete(delete))
}
