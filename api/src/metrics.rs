//! Prometheus text exposition: HTTP request counts and latency (the API's own), the snapshots
//! runners and stages publish on the [`pipeline::Board`] (stage counters, reconcile, senders,
//! throttle), and at scrape time per-stage lag from topic offsets and per-tenant message counts
//! from the campaign counter rows.
//!
//! Served on its own listener ([`router`], `--metrics-listen`, default 127.0.0.1:9464 as
//! Prometheus exporters do), never on the public API listener: it names every tenant and
//! sender.

use crate::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use pipeline::board::{Kind, Sample};
use pipeline::Board;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Upper bounds (seconds) of the HTTP latency histogram buckets.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];
const HTTP_DURATION: &str = "herald_http_request_duration_seconds";
const HTTP_REQUESTS: &str = "herald_http_requests_total";
const WEBHOOKS_UNKNOWN: &str = "herald_webhooks_unknown_sender_total";

/// The process's metrics: its own (HTTP, webhooks) in a long-lived recorder, the board's
/// snapshots rendered by a recorder made per scrape (so a sample a source stopped publishing
/// disappears at once instead of lingering).
pub struct Metrics {
    /// What this process's runners and stages published.
    pub board: Arc<Board>,
    own: PrometheusRecorder,
    http_duration: metrics::Histogram,
    http_by_class: [metrics::Counter; 5],
    webhooks_unknown: metrics::Counter,
    /// Requests observed; every [`UPKEEP_EVERY`] the histogram's pending samples are folded
    /// into its buckets (the exporter keeps each sample until a scrape or an upkeep does that,
    /// so a listener nobody scrapes would otherwise grow by one sample per request).
    observed: AtomicU64,
}

/// How many requests may be observed between two upkeeps (bounds the pending samples).
const UPKEEP_EVERY: u64 = 1024;

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

/// Metadata for keys registered directly on a recorder (no macro call site).
fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, None)
}

fn counter(recorder: &PrometheusRecorder, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
    recorder.register_counter(&Key::from_parts(name, labels), &metadata())
}

impl Metrics {
    pub fn new(board: Arc<Board>) -> Self {
        let own = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &BUCKETS)
            .expect("static, non-empty bucket list")
            .build_recorder();
        own.describe_counter(HTTP_REQUESTS.into(), None, "HTTP requests answered, by status class".into());
        own.describe_histogram(HTTP_DURATION.into(), None, "HTTP request latency".into());
        own.describe_counter(
            WEBHOOKS_UNKNOWN.into(),
            None,
            "webhook changes for phone number ids no tenant owns".into(),
        );
        let http_duration = own.register_histogram(&Key::from_static_name(HTTP_DURATION), &metadata());
        let http_by_class =
            std::array::from_fn(|i| counter(&own, HTTP_REQUESTS, vec![Label::new("class", format!("{}xx", i + 1))]));
        let webhooks_unknown = counter(&own, WEBHOOKS_UNKNOWN, Vec::new());
        Self { board, own, http_duration, http_by_class, webhooks_unknown, observed: AtomicU64::new(0) }
    }

    /// A WhatsApp webhook change for a phone number id no tenant owns (answered 200, dropped).
    pub fn webhook_unknown_sender(&self) {
        self.webhooks_unknown.increment(1);
    }

    /// One answered HTTP request (the middleware calls this; public for the criterion bench).
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.http_by_class[class].increment(1);
        self.http_duration.record(seconds);
        if self.observed.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.own.handle().run_upkeep();
        }
    }

    /// Renders the process's own metrics, the board's snapshots and `live` (values read at
    /// scrape time), as exposition text.
    pub fn render(&self, live: Vec<Sample>) -> String {
        let mut out = self.own.handle().render();
        out.push_str(&render_snapshot(self.board.samples().into_iter().chain(live)));
        out
    }
}

/// Snapshot values rendered by a recorder made for this one scrape.
fn render_snapshot(samples: impl IntoIterator<Item = Sample>) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    // Several sources may publish under one name; the exporter keeps the first description.
    for s in samples {
        let labels: Vec<Label> = s.labels.into_iter().map(|(k, v)| Label::new(k, v)).collect();
        let key = Key::from_parts(s.name, labels);
        match s.kind {
            Kind::Counter => {
                recorder.describe_counter(s.name.into(), None, s.help.into());
                recorder.register_counter(&key, &metadata()).absolute(s.value as u64);
            }
            Kind::Gauge => {
                recorder.describe_gauge(s.name.into(), None, s.help.into());
                recorder.register_gauge(&key, &metadata()).set(s.value);
            }
        }
    }
    recorder.handle().render()
}

/// Middleware: counts requests and their latency, and gives framework rejections (405, 413,
/// ...) the same JSON error body as every other error.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    // JSON errors, and the console's HTML pages (its sign-in form shows errors in words).
    let shaped = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if status.as_u16() >= 400 && !shaped {
        let code = match status.as_u16() {
            400 => "bad_request",
            404 => "not_found",
            405 => "method_not_allowed",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            422 => "unprocessable",
            _ if status.is_server_error() => "internal",
            _ => "request_rejected",
        };
        let message = status.canonical_reason().unwrap_or("request rejected");
        response = crate::ApiError::new(status, code, message).into_response();
    }
    state.metrics.observe(status.as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The scrape-time part: backend reachability, per-stage and per-partition lag from topic
/// offsets and per-tenant message counts from the campaign counter rows (a read per campaign,
/// never a scan of the message log).
pub async fn render_live(state: &AppState) -> String {
    let mut samples = Vec::new();
    let ready = crate::routes::ops::check_backends(state).await;
    for (backend, up) in [("store", ready.store), ("topics", ready.topics), ("state", ready.state)] {
        let help = "1 when this process reaches the backend";
        samples.push(Sample::gauge("herald_backend_up", help, f64::from(u8::from(up))).label("backend", backend));
    }
    for stage in pipeline::topics::STAGES {
        let topic = stage.input.name;
        let mut lag = 0;
        for p in 0..stage.input.partitions() {
            let end = state.topics.end_offset(topic, p).await.unwrap_or(0);
            // Reading a group's offset never creates the group (a group that never committed
            // has consumed nothing still in the topic).
            let done = match state.topics.committed(topic, stage.name, p).await {
                Ok(Some(c)) => c,
                _ => state.topics.start_offset(topic, p).await.unwrap_or(end),
            };
            let behind = end.saturating_sub(done);
            lag += behind;
            let help = "records waiting for a stage in one partition of its input";
            samples.push(
                Sample::gauge("herald_partition_lag_records", help, behind as f64)
                    .label("stage", stage.name)
                    .label("partition", p.to_string()),
            );
        }
        samples.push(
            Sample::gauge("herald_stage_lag_records", "records waiting for a stage", lag as f64)
                .label("stage", stage.name),
        );
    }
    if let Ok(tenants) = state.store.list_tenants().await {
        for t in tenants {
            let mut totals = storage::CampaignCounters::default();
            for c in state.store.list_campaigns(t.id).await.unwrap_or_default() {
                if let Ok(Some(k)) = state.store.get_counters(t.id, c.id).await {
                    totals.sent += k.sent;
                    totals.delivered += k.delivered;
                    totals.read += k.read;
                    totals.failed += k.failed;
                    totals.dead_lettered += k.dead_lettered;
                }
            }
            for (status, n) in [
                ("sent", totals.sent),
                ("delivered", totals.delivered),
                ("read", totals.read),
                ("failed", totals.failed),
                ("dead_lettered", totals.dead_lettered),
            ] {
                let help = "messages per tenant by current status";
                samples.push(
                    Sample::gauge("herald_tenant_messages", help, n as f64)
                        .label("tenant", t.id.to_string())
                        .label("status", status),
                );
            }
        }
    }
    state.metrics.render(samples)
}

/// The metrics listener's routes: `GET /metrics`, `/readyz`, `/healthz`.
pub fn router(state: Arc<AppState>) -> axum::Router {
    async fn scrape(State(state): State<Arc<AppState>>) -> impl IntoResponse {
        ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_live(&state).await)
    }
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        // Probes for processes without the public API (`herald worker`) and for orchestrators
        // that scrape one port.
        .route("/readyz", axum::routing::get(crate::routes::ops::readyz))
        .route("/healthz", axum::routing::get(crate::routes::ops::healthz))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_metrics_listener_answers_probes_and_scrapes() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::test_state(dir.path());
        let app = router(state);
        for (path, status) in [("/readyz", 200), ("/healthz", 200), ("/metrics", 200), ("/v1/tenants", 404)] {
            let request = axum::http::Request::builder().uri(path).body(axum::body::Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{path}");
        }
        let request = axum::http::Request::builder().uri("/readyz").body(axum::body::Body::empty()).unwrap();
        let body = axum::body::to_bytes(app.oneshot(request).await.unwrap().into_body(), 1 << 16).await.unwrap();
        let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(ready, serde_json::json!({"store": true, "topics": true, "state": true}));
    }

    #[test]
    fn renders_snapshots_once_per_name_escaped_and_forgets_vanished_samples() {
        let metrics = Metrics::default();
        metrics.board.publish("a", vec![Sample::counter("x_total", "x", 1.0).label("stage", "a")]);
        metrics.board.publish("b", vec![Sample::counter("x_total", "x", 2.0).label("stage", "b\"q")]);
        metrics.observe(200, 0.003);
        metrics.observe(503, 0.2);
        let out = metrics.render(vec![Sample::gauge("y", "y", 1.5)]);
        assert_eq!(out.matches("# TYPE x_total counter").count(), 1, "{out}");
        assert!(out.contains("x_total{stage=\"b\\\"q\"} 2"), "{out}");
        assert!(out.contains("y 1.5"), "{out}");
        assert!(out.contains("herald_http_requests_total{class=\"5xx\"} 1"), "{out}");
        assert!(out.contains("herald_http_request_duration_seconds_bucket{le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("herald_http_request_duration_seconds_count 2"), "{out}");
        // Upkeeps between scrapes fold samples into the buckets without losing any.
        for _ in 0..3 * UPKEEP_EVERY {
            metrics.observe(200, 0.0001);
        }
        let out = metrics.render(Vec::new());
        assert!(out.contains(&format!("herald_http_request_duration_seconds_count {}", 2 + 3 * UPKEEP_EVERY)), "{out}");
        metrics.board.publish("a", vec![]);
        assert!(!metrics.render(Vec::new()).contains("stage=\"a\""));
    }
}
