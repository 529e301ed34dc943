//! Trace context at the API edge: one span per HTTP request (continuing an incoming W3C
//! `traceparent`), and the current context injected as `traceparent` into the records the API
//! produces (`pipeline::trace::current_headers`), so a campaign's trace continues through the
//! stages, a span per step.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HttpHeaders<'a>(&'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: a span per request named by its route, parented on an incoming `traceparent`.
pub async fn span(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let span = tracing::info_span!("http", otel.name = %format!("{} {route}", request.method()), http.method = %request.method(),
        http.route = %route, http.status_code = tracing::field::Empty);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeaders(request.headers())));
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.status_code", response.status().as_u16());
    response
}

pub use pipeline::trace::current_headers;
