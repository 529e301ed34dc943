//! Trace context in record headers: a campaign's W3C trace continues through every stage and
//! every process, because it travels with the records (`traceparent`, `tracestate` headers, in
//! Fluvio inside Herald's envelope).
//!
//! The runner opens one span per step ([`step_span`]) parented on the step's first record's
//! context, and what the step emits carries the step span's context ([`context_headers`]), so
//! an exporter sees API request → chunk → render → throttle → deliver → reconcile as one trace
//! of parent and child spans, whichever process ran each. Without an OpenTelemetry layer
//! installed the spans are plain `tracing` spans and the headers pass through unchanged.
//!
//! It is not: the exporter's setup (the binary's `telemetry`), nor the HTTP edge (the API's).

use opentelemetry::propagation::{Extractor, Injector};
use schemas::envelope::{Headers, TRACEPARENT};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Reader<'a>(&'a Headers);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }
    fn keys(&self) -> Vec<&str> {
        self.0 .0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct Writer<'a>(&'a mut Headers);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
}

/// A span for one step of `stage` on `partition`, continuing the trace in `headers` (if any).
pub fn step_span(stage: &'static str, partition: u32, records: usize, headers: &Headers) -> tracing::Span {
    let span = tracing::info_span!(
        "step",
        otel.name = stage,
        herald.stage = stage,
        herald.partition = partition,
        herald.records = records
    );
    if headers.get(TRACEPARENT).is_some() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Reader(headers)));
        let _ = span.set_parent(parent);
    }
    span
}

/// `headers` with the trace context replaced by `span`'s: what a step emits is its child.
/// Headers without a trace, or a span no exporter records, pass through unchanged.
pub fn context_headers(span: &tracing::Span, headers: &Headers) -> Headers {
    let mut out = headers.clone();
    if headers.get(TRACEPARENT).is_some() {
        inject(span, &mut out);
    }
    out
}

/// Writes `span`'s trace context into `headers` (nothing when no exporter records it).
fn inject(span: &tracing::Span, headers: &mut Headers) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Writer(headers)));
}

/// Headers carrying the current span's trace context (empty when tracing is off): for records
/// produced outside a step, e.g. by the API inside a request's span.
pub fn current_headers() -> Headers {
    let mut headers = Headers::default();
    inject(&tracing::Span::current(), &mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    fn parts(headers: &Headers) -> Vec<String> {
        headers.get(TRACEPARENT).expect("traceparent").split('-').map(str::to_string).collect()
    }

    #[test]
    fn a_step_continues_its_records_trace_as_a_child_span() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let mut input = Headers::default();
            input.set(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            input.set("herald-due", "5");
            let span = step_span("render", 3, 10, &input);
            let out = context_headers(&span, &input);
            let (before, after) = (parts(&input), parts(&out));
            assert_eq!(after[1], before[1], "same trace");
            assert_ne!(after[2], before[2], "a new span: the step's");
            assert_eq!(out.get("herald-due"), Some("5"), "other headers pass through");

            // Inside a span, records produced outside a step carry its context.
            let _entered = span.enter();
            assert_eq!(parts(&current_headers())[1], before[1]);
        });
    }

    #[test]
    fn without_a_trace_headers_pass_through() {
        let mut input = Headers::default();
        input.set("herald-due", "5");
        let span = step_span("render", 0, 1, &input);
        assert_eq!(context_headers(&span, &input), input);
    }
}
