//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations, served at
//! `/openapi.json`, with Swagger UI (assets vendored in the binary) at `/docs`.

use crate::routes::*;
use crate::AppState;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald control API", description = "Multi-tenant streaming broadcast engine. Errors: {\"error\": {\"code\", \"message\"}}. Creates and sends accept Idempotency-Key."),
    paths(
        tenants::create, tenants::list, tenants::show, tenants::patch, tenants::delete,
        templates::create, templates::list, templates::show, templates::replace, templates::delete,
        audiences::create, audiences::list, audiences::show, audiences::add_recipients, audiences::import_csv,
        suppressions::add, suppressions::list, suppressions::remove,
        campaigns::create, campaigns::list, campaigns::show, campaigns::send, campaigns::pause, campaigns::resume,
        campaigns::cancel, campaigns::progress, campaigns::messages,
        dlq::list, dlq::redrive,
        webhooks::verify, webhooks::receive, sms_callbacks::receive,
        providers::put, providers::show, providers::list, providers::delete,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `/openapi.json` and `/docs`.
pub fn routes() -> axum::Router<Arc<AppState>> {
    utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_route_with_security() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/tenants",
            "/v1/campaigns/{id}/progress",
            "/v1/audiences/{id}/import",
            "/v1/dlq/redrive",
            "/webhooks/whatsapp",
        ] {
            assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(doc["components"]["schemas"]["CreateCampaign"].is_object());
    }
}
