//! The `herald` binary's library half: the composition root (the only place that picks
//! backends and wires stages to topics), the demo and the end-to-end load generator behind
//! `herald bench`.
//!
//! # Layout
//! - [`backend`]: which backends (embedded, or Fluvio + ScyllaDB + Redis) and opening them.
//! - [`engine`]: opens the backends, starts every stage, triggers sends, drains on shutdown.
//! - [`seed`]: creates synthetic tenants, templates, audiences and campaigns.
//! - [`config`]: defaults < `herald.toml` < `HERALD_*` env, validated before anything opens.
//! - [`telemetry`]: logs, and OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`serve`]: `herald serve` — the API plus the pipeline, graceful drain on SIGTERM.
//! - [`demo`]: `herald demo` — one campaign end to end with a live progress bar; resumable.
//! - [`mock_provider`]: `herald mock-provider` — a WhatsApp Cloud API + SMS API stand-in
//!   with rate limits, signed status webhooks and a calls log.
//! - [`bench`]: `herald bench` — many tenants through the whole pipeline, measured at the
//!   simulated provider.
//!
//! It is not: a library for other programs; the stable surfaces are the CLI and the API.

pub mod backend;
pub mod bench;
pub mod bench_distributed;
pub mod bench_html;
pub mod bench_mock;
pub mod bench_probe;
pub mod config;
pub mod demo;
pub mod engine;
pub mod mock_provider;
pub mod seed;
pub mod serve;
pub mod telemetry;

/// Peak resident set size of this process in bytes (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    peak_rss_of("self")
}

/// A process's peak resident set (`VmHWM`; `pid` a number or `self`), 0 where unknown.
pub fn peak_rss_of(pid: &str) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// This process's resident set now (Linux `VmRSS`), 0 where unknown.
pub fn current_rss_bytes() -> u64 {
    status_bytes("self", "VmRSS:")
}

/// A kB field of `/proc/{pid}/status`, in bytes; 0 where unknown.
fn status_bytes(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
