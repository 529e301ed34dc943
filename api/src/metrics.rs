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
use pipeline::Board;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Upper bounds (seconds) of the HTTP latency histogram buckets.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Default)]
pub struct Metrics {
    /// What this process's runners and stages published.
    pub board: Arc<Board>,
    /// WhatsApp webhook changes for phone number ids no tenant owns (answered 200, dropped).
    pub webhook_unknown_senders: AtomicU64,
    http_by_class: [AtomicU64; 5],
    http_buckets: [AtomicU64; BUCKETS.len()],
    http_count: AtomicU64,
    http_sum_us: AtomicU64,
}

impl Metrics {
    pub fn new(board: Arc<Board>) -> Self {
        Self { board, ..Default::default() }
    }

    fn observe(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.http_by_class[class].fetch_add(1, Ordering::Relaxed);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.http_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.http_count.fetch_add(1, Ordering::Relaxed);
        self.http_sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Renders the exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# TYPE herald_http_requests_total counter");
        for (i, a) in self.http_by_class.iter().enumerate() {
            let _ = writeln!(out, "herald_http_requests_total{{class=\"{}xx\"}} {}", i + 1, load(a));
        }
        let _ = writeln!(out, "# TYPE herald_http_request_duration_seconds histogram");
        for (bound, a) in BUCKETS.iter().zip(&self.http_buckets) {
            let _ = writeln!(out, "herald_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}", load(a));
        }
        let count = load(&self.http_count);
        let _ = writeln!(out, "herald_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "herald_http_request_duration_seconds_sum {}", load(&self.http_sum_us) as f64 / 1e6);
        let _ = writeln!(out, "herald_http_request_duration_seconds_count {count}");
        self.board.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP herald_webhooks_unknown_sender_total webhook changes for phone number ids no tenant owns\n# TYPE herald_webhooks_unknown_sender_total counter"
        );
        let _ = writeln!(out, "herald_webhooks_unknown_sender_total {}", load(&self.webhook_unknown_senders));
        out
    }
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

/// The scrape-time part: per-stage lag from topic offsets and per-tenant message counts from
/// the campaign counter rows (a read per campaign, never a scan of the message log).
pub async fn render_live(state: &AppState) -> String {
    let mut out = state.metrics.render();
    let _ = writeln!(
        out,
        "# HELP herald_stage_lag_records records waiting for a stage\n# TYPE herald_stage_lag_records gauge"
    );
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
            lag += end.saturating_sub(done);
        }
        let _ = writeln!(out, "herald_stage_lag_records{{stage=\"{}\"}} {lag}", stage.name);
    }
    let _ = writeln!(
        out,
        "# HELP herald_tenant_messages messages per tenant by current status\n# TYPE herald_tenant_messages gauge"
    );
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
                let _ = writeln!(out, "herald_tenant_messages{{tenant=\"{}\",status=\"{status}\"}} {n}", t.id);
            }
        }
    }
    out
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
}
