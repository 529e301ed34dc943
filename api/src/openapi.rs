//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations, served at
//! `/openapi.json`, with Swagger UI (assets vendored in the binary) at `/docs`.
//!
//! Clients generate SDKs from this document, so it is exact: the annotations give each
//! operation's parameters, typed request and success bodies (with the constraints the handlers
//! enforce, `additionalProperties: false` where unknown fields are refused), and [`ERRORS`]
//! lists, per operation, every error status it can return — each with the one error schema —
//! plus its `Idempotency-Key` and `X-Herald-Tenant` headers. A test checks that the table and
//! the routes cover each other; a property-based fuzz run (schemathesis, `tests/api_fuzz.rs`)
//! checks the running server against the document.

use crate::error::ErrorBody;
use crate::routes::*;
use crate::AppState;
use std::sync::Arc;
use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// What an operation takes beyond its annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    None,
    /// Acts inside the caller's tenant: platform admins name one with `X-Herald-Tenant`.
    Tenant,
    /// `Tenant` and accepts `Idempotency-Key`.
    TenantIdempotent,
    /// Accepts `Idempotency-Key` (outside a tenant).
    Idempotent,
}

/// Every operation's error statuses (and extra headers). Keep in step with the handlers: a
/// status a handler can return that is missing here fails the fuzz run.
pub const ERRORS: &[(&str, &str, &[u16], Extra)] = &[
    ("post", "/v1/tenants", &[400, 401, 403, 409, 413, 422, 503], Extra::Idempotent),
    ("get", "/v1/tenants", &[401, 403, 503], Extra::None),
    ("get", "/v1/tenants/{id}", &[400, 401, 404, 503], Extra::None),
    ("patch", "/v1/tenants/{id}", &[400, 401, 403, 404, 413, 422, 503], Extra::None),
    ("delete", "/v1/tenants/{id}", &[400, 401, 403, 404, 503], Extra::None),
    ("get", "/v1/tenants/{id}/providers", &[400, 401, 403, 404, 503], Extra::None),
    ("put", "/v1/tenants/{id}/providers/{name}", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::None),
    ("get", "/v1/tenants/{id}/providers/{name}", &[400, 401, 403, 404, 503], Extra::None),
    ("delete", "/v1/tenants/{id}/providers/{name}", &[400, 401, 403, 404, 503], Extra::None),
    ("post", "/v1/templates", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("post", "/v1/templates/preview", &[400, 401, 403, 404, 413, 422, 503], Extra::Tenant),
    ("get", "/v1/templates", &[400, 401, 404, 503], Extra::Tenant),
    ("get", "/v1/templates/{id}", &[400, 401, 404, 503], Extra::Tenant),
    ("put", "/v1/templates/{id}", &[400, 401, 403, 404, 413, 422, 503], Extra::Tenant),
    ("delete", "/v1/templates/{id}", &[400, 401, 403, 404, 503], Extra::Tenant),
    ("post", "/v1/audiences", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("get", "/v1/audiences", &[400, 401, 404, 503], Extra::Tenant),
    ("get", "/v1/audiences/{id}", &[400, 401, 404, 503], Extra::Tenant),
    ("post", "/v1/audiences/{id}/recipients", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::Tenant),
    ("post", "/v1/audiences/{id}/import", &[400, 401, 403, 404, 409, 413, 415, 422, 503], Extra::Tenant),
    ("post", "/v1/suppressions", &[400, 401, 403, 404, 413, 422, 503], Extra::Tenant),
    ("get", "/v1/suppressions", &[400, 401, 404, 503], Extra::Tenant),
    ("delete", "/v1/suppressions/{address}", &[400, 401, 403, 404, 503], Extra::Tenant),
    ("post", "/v1/campaigns", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("get", "/v1/campaigns", &[400, 401, 404, 503], Extra::Tenant),
    ("get", "/v1/campaigns/{id}", &[400, 401, 404, 503], Extra::Tenant),
    ("post", "/v1/campaigns/{id}/send", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("post", "/v1/campaigns/{id}/pause", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("post", "/v1/campaigns/{id}/resume", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("post", "/v1/campaigns/{id}/cancel", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("get", "/v1/campaigns/{id}/progress", &[400, 401, 404, 503], Extra::Tenant),
    ("get", "/v1/campaigns/{id}/events", &[400, 401, 404, 429, 503], Extra::Tenant),
    ("get", "/v1/campaigns/events", &[400, 401, 404, 429, 503], Extra::Tenant),
    ("get", "/v1/senders", &[400, 401, 404, 503], Extra::Tenant),
    ("get", "/v1/campaigns/{id}/messages", &[400, 401, 404, 503], Extra::Tenant),
    ("get", "/v1/campaigns/{id}/timeline", &[400, 401, 404, 503], Extra::Tenant),
    ("get", "/v1/dlq", &[400, 401, 404, 503], Extra::Tenant),
    ("post", "/v1/dlq/redrive", &[400, 401, 403, 404, 409, 413, 422, 503], Extra::TenantIdempotent),
    ("get", "/webhooks/whatsapp", &[400, 403, 503], Extra::None),
    ("post", "/webhooks/whatsapp", &[400, 401, 413, 503], Extra::None),
    ("post", "/webhooks/sms/{tenant}", &[400, 401, 413, 503], Extra::None),
    ("get", "/healthz", &[], Extra::None),
    ("get", "/readyz", &[], Extra::None),
];

/// A link from a creating operation to the operations that use what it created (OpenAPI
/// links: SDKs and stateful fuzzers follow them).
struct LinkSpec {
    method: &'static str,
    path: &'static str,
    status: &'static str,
    /// The target's parameter, and the runtime expression giving it.
    parameter: &'static str,
    value: &'static str,
    targets: &'static [&'static str],
}

const fn by_id(method: &'static str, path: &'static str, targets: &'static [&'static str]) -> LinkSpec {
    LinkSpec { method, path, status: "201", parameter: "id", value: "$response.body#/id", targets }
}

const LINKS: &[LinkSpec] = &[
    by_id(
        "post",
        "/v1/tenants",
        &[
            "tenants_show",
            "tenants_patch",
            "tenants_delete",
            "providers_put",
            "providers_show",
            "providers_list",
            "providers_delete",
        ],
    ),
    by_id("post", "/v1/templates", &["templates_show", "templates_replace", "templates_delete"]),
    by_id("post", "/v1/audiences", &["audiences_show", "audiences_add_recipients", "audiences_import_csv"]),
    by_id(
        "post",
        "/v1/campaigns",
        &[
            "campaigns_show",
            "campaigns_send",
            "campaigns_pause",
            "campaigns_resume",
            "campaigns_cancel",
            "campaigns_progress",
            "campaigns_messages",
        ],
    ),
    LinkSpec {
        method: "post",
        path: "/v1/suppressions",
        status: "201",
        parameter: "address",
        value: "$response.body#/address",
        targets: &["suppressions_remove"],
    },
];

/// What each error status means, with the codes it carries.
fn describe(status: u16) -> &'static str {
    match status {
        400 => "Malformed request: `malformed_json`, `invalid_query`, `invalid_cursor`, `tenant_required` (a platform admin must name a tenant with X-Herald-Tenant), `invalid_idempotency_key`, `bad_request`",
        401 => "Missing, invalid or expired token (`unauthorized`), or its tenant does not exist (`tenant_not_found`); for webhooks, a bad signature",
        403 => "The role is too low (`forbidden`), a console session's change without its `X-CSRF-Token` (`csrf_failed`), or a field only platform admins may change (`forbidden_field`, naming `field`); for the webhook verification, a verify token that matches no tenant",
        404 => "Not found, or another tenant's (indistinguishable on purpose): `not_found`",
        409 => "Conflict: `illegal_transition`, `campaign_changed` (another change won the race; nothing applied), `sender_taken`, `idempotency_in_progress`",
        413 => "The body is too large (`payload_too_large`; JSON bodies: 1 MiB; CSV: 2 GiB; CSV import also reports `imported_before_error`)",
        415 => "Not `text/csv` (`unsupported_media_type`)",
        429 => "Too many open event streams for this tenant (`too_many_streams`)",
        422 => "Well-formed but refused: `invalid_body`, `invalid_name`, `invalid_rate_limit`, `invalid_burst`, `invalid_weight`, `null_not_allowed`, `invalid_provider`, `address_not_allowed`, `template_invalid`, `template_too_large`, `missing_variable`, `rendered_too_large`, `unknown_channel`, `unsupported_parameter`, `unknown_template`, `unknown_audience`, `idempotency_key_reused`, `row_too_large`, `too_many_columns`, ... (each names what is wrong)",
        503 => "A backend is temporarily unavailable: retry (`unavailable`)",
        _ => "Error",
    }
}

fn method_of(name: &str) -> Option<HttpMethod> {
    Some(match name {
        "get" => HttpMethod::Get,
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "patch" => HttpMethod::Patch,
        "delete" => HttpMethod::Delete,
        _ => return None,
    })
}

/// Applies [`ERRORS`] and the bearer security scheme to the generated document.
struct Contract;

/// The operation of `item` for `method`.
fn operation_mut<'a>(
    item: &'a mut utoipa::openapi::PathItem,
    method: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    match method_of(method)? {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Operation ids unique across the document: `<tag>_<handler>` (handlers of different
        // resources share names such as `create`).
        for item in openapi.paths.paths.values_mut() {
            for method in ["get", "post", "put", "patch", "delete"] {
                if let Some(op) = operation_mut(item, method) {
                    let tag = op.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
                    if let Some(id) = op.operation_id.as_mut().filter(|id| !id.starts_with(&format!("{tag}_"))) {
                        *id = format!("{tag}_{id}");
                    }
                }
            }
        }
        for link in LINKS {
            let Some(op) = openapi.paths.paths.get_mut(link.path).and_then(|item| operation_mut(item, link.method))
            else {
                continue;
            };
            if let Some(RefOr::T(response)) = op.responses.responses.get_mut(link.status) {
                for target in link.targets {
                    let link = utoipa::openapi::link::LinkBuilder::new()
                        .operation_id(*target)
                        .parameter(link.parameter, link.value)
                        .build();
                    response.links.insert(target.to_string(), RefOr::T(link));
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.schemas.insert(ErrorBody::name().into_owned(), ErrorBody::schema());
        components.schemas.insert(crate::error::ErrorDetail::name().into_owned(), crate::error::ErrorDetail::schema());
        for (method, path, statuses, extra) in ERRORS {
            let Some(operation) = openapi.paths.paths.get_mut(*path).and_then(|item| operation_mut(item, method))
            else {
                continue;
            };
            for status in *statuses {
                let response = ResponseBuilder::new()
                    .description(describe(*status))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))).build(),
                    )
                    .build();
                operation.responses.responses.insert(status.to_string(), RefOr::T(response));
            }
            let mut headers = Vec::new();
            if matches!(extra, Extra::Tenant | Extra::TenantIdempotent) {
                headers.push(
                    ParameterBuilder::new()
                        .name("X-Herald-Tenant")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some("Platform admins only: the tenant to act in (ignored for tenant tokens)"))
                        .schema(Some(u64::schema()))
                        .build(),
                );
            }
            if matches!(extra, Extra::Idempotent | Extra::TenantIdempotent) {
                headers.push(
                    ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "Replays the first response of this request for 24 h; the same key with another body is a 422, with a request still running a 409",
                        ))
                        .schema(Some(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::String)
                                .min_length(Some(1))
                                .max_length(Some(255))
                                .pattern(Some("^[\\x21-\\x7E]+$")),
                        ))
                        .build(),
                );
            }
            if !headers.is_empty() {
                operation.parameters.get_or_insert_with(Vec::new).extend(headers);
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald control API", description = "Multi-tenant streaming broadcast engine. Every error is `{\"error\": {\"code\", \"message\"}}` with a stable `code`. Creates and sends accept `Idempotency-Key`. Tokens are JWTs (`herald token`) with `tenant_id` and `role` (platform_admin, tenant_admin, operator, viewer)."),
    paths(
        tenants::create, tenants::list, tenants::show, tenants::patch, tenants::delete,
        templates::create, templates::preview, templates::list, templates::show, templates::replace, templates::delete,
        audiences::create, audiences::list, audiences::show, audiences::add_recipients, audiences::import_csv,
        suppressions::add, suppressions::list, suppressions::remove,
        campaigns::create, campaigns::list, campaigns::show, campaigns::send, campaigns::pause, campaigns::resume,
        campaigns::cancel, campaigns::progress, messages::messages, timeline::timeline, events::campaign, events::tenant, senders::list,
        dlq::list, dlq::redrive,
        webhooks::verify, webhooks::receive, sms_callbacks::receive,
        providers::put, providers::show, providers::list, providers::delete,
        ops::healthz, ops::readyz,
    ),
    modifiers(&Contract)
)]
pub struct ApiDoc;

/// The document as served. utoipa 5.5 writes a link's `operationId` as `operation_id`, which
/// no client reads; the served JSON spells it as the specification does.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    for item in children(&mut doc, "paths") {
        for op in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            for response in children(op, "responses") {
                for link in children(response, "links") {
                    if let Some(obj) = link.as_object_mut() {
                        if let Some(id) = obj.remove("operation_id") {
                            obj.insert("operationId".into(), id);
                        }
                    }
                }
            }
        }
    }
    doc
}

/// The values of object `v`'s member `key` (`get_mut`: indexing a missing key would insert a
/// `null`).
fn children<'a>(v: &'a mut serde_json::Value, key: &str) -> Vec<&'a mut serde_json::Value> {
    v.get_mut(key).and_then(|c| c.as_object_mut()).map(|c| c.values_mut().collect()).unwrap_or_default()
}

/// `/openapi.json` and `/docs`.
pub fn routes() -> axum::Router<Arc<AppState>> {
    utoipa_swagger_ui::SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_errors_and_every_entry_an_operation() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut operations = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                if method_of(method).is_none() {
                    continue;
                }
                operations += 1;
                let entry = ERRORS.iter().find(|(m, p, _, _)| m == method && p == path);
                let Some((_, _, statuses, _)) = entry else { panic!("{method} {path} has no ERRORS entry") };
                for s in statuses.iter() {
                    let response = &op["responses"][s.to_string()];
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {s}"
                    );
                }
                let secured = op.get("security").is_some();
                assert_eq!(secured, statuses.contains(&401) && !path.starts_with("/webhooks"), "{method} {path}");
                // Every path parameter is declared.
                for name in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                    let declared = op["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                    assert!(declared, "{method} {path}: path parameter {name} undeclared");
                }
            }
        }
        assert_eq!(operations, ERRORS.len(), "an ERRORS entry names no operation");
        // Operation ids are unique, and every link names one.
        let ids: Vec<&str> = paths
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let unique: std::collections::HashSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "duplicate operationIds: {ids:?}");
        for link in LINKS {
            for t in link.targets {
                assert!(ids.contains(t), "a link names no operation: {t}");
                assert_eq!(
                    doc["paths"][link.path][link.method]["responses"][link.status]["links"][t]["operationId"],
                    *t
                );
            }
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert_eq!(doc["components"]["schemas"]["CreateTenant"]["additionalProperties"], false);
    }

    #[tokio::test]
    async fn the_router_serves_every_documented_operation() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let state = crate::test_state(dir.path());
        let app = crate::router(state);
        for (method, path, _, _) in ERRORS {
            let uri = path
                .replace("{id}", "1")
                .replace("{name}", "whatsapp")
                .replace("{address}", "a")
                .replace("{tenant}", "1");
            let request = axum::http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(status != 405 && !text.contains("route not found"), "{method} {path}: {status} {text}");
        }
    }
}
