//! Trace context at the API edge: one span per HTTP request (continuing an incoming W3C
//! `traceparent`), and the current context injected as `traceparent` into the records the API
//! produces, so a campaign's trace continues through the stages (the runner carries headers).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector};
use schemas::envelope::Headers;
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

struct RecordHeaders<'a>(&'a mut Headers);

impl Injector for RecordHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
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

/// Headers carrying the current trace context (empty when tracing is off).
pub fn current_headers() -> Headers {
    let mut headers = Headers::default();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut RecordHeaders(&mut headers)));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn injects_a_w3c_traceparent_inside_a_span() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("send");
            let _entered = span.enter();
            let headers = current_headers();
            let traceparent = headers.get(schemas::envelope::TRACEPARENT).expect("traceparent injected");
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!((parts.len(), parts[0], parts[1].len(), parts[2].len()), (4, "00", 32, 16), "{traceparent}");
        });
    }
}
