//! The operator console at `/console`: a web page where a marketing operator runs campaigns
//! without curl. The server renders two pages (sign-in, and a shell); everything else is drawn
//! in the browser by small ES modules in `assets/` that call the same REST API a client would,
//! authenticated by the session cookie (`session`). So every rule (roles, tenant isolation,
//! validation, idempotency) is the API's own; the console adds none and bypasses none.
//!
//! Assets are compiled into the binary (`include_str!`): nothing is fetched from a CDN, and no
//! Node toolchain is needed. Every console response carries a strict Content-Security-Policy
//! (scripts and styles from this origin only, no inline code, no framing).
//!
//! It is not: a second API. It has no handler that changes anything except the session.

pub mod pages;
pub mod session;

use crate::{AppState, Caller};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The policy on every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's static files: name, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("assets/console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("lib.js", "text/javascript; charset=utf-8", include_str!("assets/lib.js")),
    ("campaigns.js", "text/javascript; charset=utf-8", include_str!("assets/campaigns.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_str!("assets/chart.js")),
    ("audiences.js", "text/javascript; charset=utf-8", include_str!("assets/audiences.js")),
    ("templates.js", "text/javascript; charset=utf-8", include_str!("assets/templates.js")),
    ("dlq.js", "text/javascript; charset=utf-8", include_str!("assets/dlq.js")),
    ("settings.js", "text/javascript; charset=utf-8", include_str!("assets/settings.js")),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Any console page: the shell for a signed-in caller, else the sign-in form.
async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match session::cookie_token(&headers) {
        Some(token) if Caller::from_token(&state, token, &headers).await.is_ok() => pages::shell(),
        _ => Redirect::to("/console/signin").into_response(),
    }
}

async fn sign_in_form() -> Response {
    pages::sign_in(StatusCode::OK, None)
}

/// Security headers on every console response.
async fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/campaigns") }))
        .route("/console/signin", get(sign_in_form).post(session::sign_in))
        .route("/console/signout", post(session::sign_out))
        .route("/console/session", get(session::show))
        .route("/console/assets/{name}", get(asset))
        .route("/console/{*page}", get(page))
        .layer(axum::middleware::map_response(secured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_an_asset_imports_is_served() {
        for (_, _, body) in ASSETS {
            for line in body.lines().filter(|l| l.trim_start().starts_with("import ")) {
                let file = line.rsplit("'./").next().and_then(|r| r.split('\'').next()).unwrap();
                assert!(ASSETS.iter().any(|(n, _, _)| *n == file), "{file} is imported but not served");
            }
        }
    }

    #[test]
    fn no_asset_has_inline_handlers_or_remote_urls() {
        for (name, _, body) in ASSETS {
            // The SVG namespace is a name, not a fetch.
            let body = body.replace("'http://www.w3.org/2000/svg'", "");
            for bad in
                ["http://", "from 'http", "fetch('http", "innerHTML", "outerHTML", "eval(", "new Function", "style="]
            {
                assert!(!body.contains(bad), "{name} contains {bad}");
            }
        }
    }
}
