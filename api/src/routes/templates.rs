//! `/v1/templates`: templates are compiled at create time; syntax errors are a 422, and so is a
//! field over 64 KiB (`template_too_large`).

use crate::error::{parse_id, parse_json, ApiError, ApiResult};
use crate::{idempotency, AppState, Caller, Role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use schemas::{Channel, TemplateId, TenantId};
use serde::{Deserialize, Serialize};
use stages::render::CompiledTemplate;
use std::sync::Arc;
use storage::{Template, WhatsAppComponent, WhatsAppTemplate};

/// A channel's name.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelName {
    Sms,
    Email,
    Whatsapp,
}

/// A WhatsApp template message: the approved template and its parameters (each may use
/// `{{ variable }}`).
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSpec {
    /// The approved template's name at Meta.
    #[schema(min_length = 1, max_length = 512)]
    pub template_name: String,
    /// e.g. `en_US`.
    #[schema(min_length = 1, max_length = 20)]
    pub language: String,
    #[serde(default)]
    #[schema(max_items = 20)]
    pub components: Vec<ComponentSpec>,
}

/// A template component (Meta's shape).
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    #[serde(rename = "type")]
    #[schema(value_type = ComponentType)]
    pub kind: String,
    /// Buttons only, e.g. `url` or `quick_reply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 32)]
    pub sub_type: Option<String>,
    /// Buttons only: the button's position, e.g. `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 4)]
    pub index: Option<String>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub parameters: Vec<ParameterSpec>,
}

/// The component types Herald renders.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComponentType {
    Header,
    Body,
    Button,
}

/// A text parameter (the only kind supported).
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    #[serde(rename = "type")]
    #[schema(value_type = ParameterType)]
    pub kind: String,
    #[schema(max_length = 65536)]
    pub text: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    Text,
}

/// A template. SMS uses `body`; email `subject`, `body` (text) and optionally `html` (recipient
/// values are HTML-escaped there); WhatsApp uses `whatsapp`. Each field is at most 64 KiB.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateBody {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    #[schema(value_type = ChannelName)]
    channel: String,
    #[schema(max_length = 65536)]
    body: Option<String>,
    #[schema(max_length = 65536)]
    subject: Option<String>,
    #[schema(max_length = 65536)]
    html: Option<String>,
    whatsapp: Option<WhatsAppSpec>,
}

/// A stored template.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub id: u64,
    pub name: String,
    #[schema(value_type = ChannelName)]
    pub channel: String,
    pub body: Option<String>,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub whatsapp: Option<WhatsAppSpec>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateList {
    pub items: Vec<TemplateView>,
}

/// Refuses a template field over the size the engine compiles (`template::MAX_SOURCE_BYTES`).
fn within_size(field: &str, source: Option<&str>) -> ApiResult<()> {
    let max = stages::render::template::MAX_SOURCE_BYTES;
    match source {
        Some(s) if s.len() > max => Err(ApiError::unprocessable(
            "template_too_large",
            format!("{field} is {} bytes; a template field is at most {max} bytes", s.len()),
        )
        .with("field", field.to_string())),
        _ => Ok(()),
    }
}

fn whatsapp(spec: WhatsAppSpec) -> ApiResult<WhatsAppTemplate> {
    let invalid = |message: String| ApiError::unprocessable("template_invalid", message);
    if spec.template_name.is_empty() || spec.template_name.chars().count() > 512 {
        return Err(invalid("whatsapp.template_name must be 1-512 characters".into()));
    }
    if spec.language.is_empty() || spec.language.chars().count() > 20 {
        return Err(invalid("whatsapp.language must be 1-20 characters (e.g. en_US)".into()));
    }
    let components = spec
        .components
        .into_iter()
        .map(|c| {
            if !matches!(c.kind.as_str(), "header" | "body" | "button") {
                return Err(invalid(format!("component type {:?} must be header, body or button", c.kind)));
            }
            if let Some(p) = c.parameters.iter().find(|p| p.kind != "text") {
                return Err(ApiError::unprocessable(
                    "unsupported_parameter",
                    format!("parameter type {:?} is not supported yet (text only)", p.kind),
                ));
            }
            for p in &c.parameters {
                within_size("whatsapp.components.parameters.text", Some(&p.text))?;
            }
            // Buttons are stored as "button:<sub_type>:<index>".
            let kind = match (c.kind.as_str(), c.sub_type, c.index) {
                ("button", Some(sub), Some(index)) if !sub.contains(':') && !index.contains(':') => {
                    format!("button:{sub}:{index}")
                }
                ("button", _, _) => return Err(invalid("a button needs sub_type and index".into())),
                (_, None, None) => c.kind,
                _ => return Err(invalid("only buttons have sub_type and index".into())),
            };
            Ok(WhatsAppComponent { kind, parameters: c.parameters.into_iter().map(|p| p.text).collect() })
        })
        .collect::<ApiResult<_>>()?;
    Ok(WhatsAppTemplate { template_name: spec.template_name, language: spec.language, components })
}

/// The template a request describes, validated and compiled (compile errors are 422).
fn build(tenant: TenantId, id: TemplateId, req: TemplateBody) -> ApiResult<(Template, CompiledTemplate)> {
    let channel: Channel = req.channel.parse().map_err(|e: String| ApiError::unprocessable("unknown_channel", e))?;
    crate::validate::name(&req.name)?;
    within_size("body", req.body.as_deref())?;
    within_size("subject", req.subject.as_deref())?;
    within_size("html", req.html.as_deref())?;
    let template = Template {
        id,
        tenant,
        name: req.name,
        channel,
        body: req.body,
        subject: req.subject,
        html: req.html,
        whatsapp: req.whatsapp.map(whatsapp).transpose()?,
    };
    let compiled = CompiledTemplate::compile(&template).map_err(|e| ApiError::unprocessable("template_invalid", e))?;
    Ok((template, compiled))
}

fn view(t: &Template) -> TemplateView {
    let component = |c: &WhatsAppComponent| {
        let (kind, sub_type, index) = match c.kind.split(':').collect::<Vec<_>>().as_slice() {
            ["button", sub, index] => ("button".to_string(), Some(sub.to_string()), Some(index.to_string())),
            _ => (c.kind.clone(), None, None),
        };
        let parameters = c.parameters.iter().map(|p| ParameterSpec { kind: "text".into(), text: p.clone() }).collect();
        ComponentSpec { kind, sub_type, index, parameters }
    };
    TemplateView {
        id: t.id.0,
        name: t.name.clone(),
        channel: t.channel.as_str().to_string(),
        body: t.body.clone(),
        subject: t.subject.clone(),
        html: t.html.clone(),
        whatsapp: t.whatsapp.as_ref().map(|w| WhatsAppSpec {
            template_name: w.template_name.clone(),
            language: w.language.clone(),
            components: w.components.iter().map(component).collect(),
        }),
    }
}

#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = TemplateBody, responses((status = 201, description = "Template created", body = TemplateView)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    // Validated before an id is taken, so a bad template changes nothing.
    let (mut template, _) = build(tenant, TemplateId(0), parse_json(&body)?)?;
    idempotency::once(&state, &caller, &headers, "POST /v1/templates", &body, || async {
        template.id = TemplateId(state.state.next_id("template").await?);
        state.store.put_template(&template).await?;
        Ok((StatusCode::CREATED, crate::to_value(view(&template))?))
    })
    .await
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates", responses((status = 200, description = "Templates of the tenant", body = TemplateList)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<TemplateList>> {
    let templates = state.store.list_templates(caller.tenant()?).await?;
    Ok(Json(TemplateList { items: templates.iter().map(view).collect() }))
}

#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", params(("id" = u64, Path, description = "Template id")), responses((status = 200, description = "The template", body = TemplateView)), security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    let id = TemplateId(parse_id(&id, "template")?);
    let t = state.store.get_template(caller.tenant()?, id).await?.ok_or_else(|| ApiError::not_found("template"))?;
    Ok(Json(view(&t)))
}

#[utoipa::path(put, path = "/v1/templates/{id}", tag = "templates", params(("id" = u64, Path, description = "Template id")), request_body = TemplateBody, responses((status = 200, description = "Replaced", body = TemplateView)), security(("bearer" = [])))]
pub(crate) async fn replace(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<TemplateView>> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    let id = TemplateId(parse_id(&id, "template")?);
    state.store.get_template(tenant, id).await?.ok_or_else(|| ApiError::not_found("template"))?;
    let (template, _) = build(tenant, id, parse_json(&body)?)?;
    state.store.put_template(&template).await?;
    Ok(Json(view(&template)))
}

#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates", params(("id" = u64, Path, description = "Template id")), responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
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

/// A template as it would be stored, and a sample recipient to render it for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewRequest {
    template: TemplateBody,
    /// The recipient's address (the `address` variable).
    #[schema(max_length = 320)]
    address: String,
    /// The recipient's other variables (at most 100).
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
}

/// A template rendered for one recipient: the fields of its channel.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Preview {
    #[schema(value_type = ChannelName)]
    pub channel: String,
    /// SMS text, or an email's text part.
    pub text: Option<String>,
    pub subject: Option<String>,
    pub html: Option<String>,
    /// WhatsApp: the template with each parameter rendered.
    pub whatsapp: Option<WhatsAppSpec>,
}

#[utoipa::path(post, path = "/v1/templates/preview", tag = "templates", request_body = PreviewRequest, responses((status = 200, description = "The template compiled and rendered for the sample recipient (nothing is stored); compile errors are 422 `template_invalid`, a variable the recipient lacks 422 `missing_variable`, output over the channel's bound 422 `rendered_too_large`", body = Preview)), security(("bearer" = [])))]
pub(crate) async fn preview(caller: Caller, body: Bytes) -> ApiResult<Json<Preview>> {
    caller.require(Role::Operator)?;
    let tenant = caller.tenant()?;
    let req: PreviewRequest = parse_json(&body)?;
    if req.address.len() > 320 || req.attributes.len() > 100 {
        return Err(ApiError::unprocessable("invalid_body", "address is at most 320 bytes, attributes at most 100"));
    }
    let (template, compiled) = build(tenant, TemplateId(0), req.template)?;
    let recipient = schemas::Recipient {
        id: schemas::RecipientId(0),
        bucket: 0,
        address: req.address,
        attrs: req.attributes.into_iter().collect(),
    };
    let content = compiled.render(&recipient).map_err(|e| match e {
        stages::render::template::RenderError::Missing(m) => ApiError::unprocessable("missing_variable", m.to_string()),
        stages::render::template::RenderError::TooLarge => {
            ApiError::unprocessable("rendered_too_large", "the rendered message is over its channel's limit")
        }
    })?;
    let mut out = Preview {
        channel: template.channel.as_str().to_string(),
        text: None,
        subject: None,
        html: None,
        whatsapp: None,
    };
    match content {
        schemas::Content::Sms { text } => out.text = Some(text),
        schemas::Content::Email { subject, text, html } => {
            out.subject = Some(subject);
            out.text = Some(text);
            out.html = html;
        }
        schemas::Content::WhatsApp { template_name, language, components } => {
            let rendered = WhatsAppTemplate {
                template_name,
                language,
                components: components
                    .into_iter()
                    .map(|(kind, parameters)| WhatsAppComponent { kind, parameters })
                    .collect(),
            };
            out.whatsapp = view(&Template { whatsapp: Some(rendered), ..template }).whatsapp;
        }
    }
    Ok(Json(out))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/templates/preview", axum::routing::post(preview))
        .route("/v1/templates", get(list).post(create))
        .route("/v1/templates/{id}", get(show).put(replace).delete(delete))
}
