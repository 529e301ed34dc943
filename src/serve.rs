//! `herald serve`: the API and the whole pipeline in one process, on the embedded default or
//! (`[backend] kind = "distributed"`) on Fluvio, ScyllaDB and Redis.
//! SIGTERM/Ctrl-C: stop accepting, drain the pipeline, flush the store, exit 0.

use crate::backend::{BackendChoice, BackendKind};
use crate::config::HeraldConfig;
use crate::engine::{Engine, EngineConfig};
use anyhow::Context;
use stages::deliver::providers::address::AddressPolicy;
use std::sync::Arc;
use std::time::Duration;

/// Builds the engine configuration for `config`.
pub fn engine_config(config: &HeraldConfig) -> anyhow::Result<EngineConfig> {
    let mut engine = EngineConfig::new(&config.data_dir);
    if config.backend.kind == BackendKind::Distributed {
        engine.backend = BackendChoice::Distributed(Box::new(config.distributed()?));
        // Other processes consume the same topics: partitions are shared by lease.
        engine.partition_leases = Some(Duration::from_secs(config.backend.lease_ttl_s));
    } else {
        engine.backend = BackendChoice::embedded(config.backend.memory_budget_mib << 20);
    }
    engine.stages = config.stages.clone();
    engine.simulator.latency = Duration::from_millis(config.simulator.latency_ms);
    engine.simulator.jitter = Duration::from_millis(config.simulator.latency_ms / 2);
    engine.simulator.receipt_delay = Duration::from_millis(config.simulator.receipt_delay_ms);
    engine.simulator.transient_failure_rate = config.simulator.failure_rate;
    engine.simulator.permanent_failure_rate = config.simulator.permanent_failure_rate;
    engine.simulator.calls_log = Some(config.data_dir.join("provider-calls.jsonl"));
    engine.throttle.quota_window = Duration::from_secs(config.quota_window_s);
    engine.deliver.call_timeout = Duration::from_millis(config.provider_timeout_ms);
    engine.deliver.receipt_grace = Duration::from_millis(config.receipt_grace_ms);
    engine.addresses = AddressPolicy { allow_private: config.allow_private_provider_addresses };
    Ok(engine)
}

/// A running server: the bound address and a handle to stop it (for tests and embedding).
///
/// The API runs on its own runtime thread, apart from the pipeline's workers: stage work
/// (including blocking store calls) can then never queue a request behind it, and the OS
/// scheduler wakes the mostly idle API thread promptly (measured: progress p99 16.5 ms on the
/// shared runtime under a 1M-recipient send, see the issue note).
pub struct Server {
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served (None: disabled).
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub engine: Arc<tokio::sync::Mutex<Option<Engine>>>,
    stop: pipeline::Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    api_runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Starts the engine and the API; returns once the listener is bound.
    pub async fn start(config: &HeraldConfig) -> anyhow::Result<Self> {
        let auth = config.auth()?;
        let secrets = config.secrets()?;
        let mut engine_config = engine_config(config)?;
        engine_config.secrets = Some(secrets.clone());
        let engine = Engine::start(engine_config).await?;
        let metrics = api::metrics::Metrics::new(engine.board.clone());
        let api_config = api::ApiConfig {
            idempotency_ttl: Duration::from_secs(config.idempotency_ttl_s),
            addresses: AddressPolicy { allow_private: config.allow_private_provider_addresses },
        };
        let state = api::AppState::new(
            engine.store.clone(),
            engine.state.clone(),
            engine.topics.clone(),
            auth,
            metrics,
            secrets,
            api_config,
        );
        let listener =
            std::net::TcpListener::bind(&config.listen).with_context(|| format!("binding {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let metrics_listener = match config.metrics_addr() {
            Some(at) => {
                let l =
                    std::net::TcpListener::bind(at).with_context(|| format!("binding the metrics listener {at}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let api_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("herald-api")
            .enable_all()
            .build()
            .context("starting the API runtime")?;
        let stop = pipeline::Shutdown::new();
        let housekeeping = (state.clone(), stop.clone());
        let (purge_after, idempotency_ttl) =
            (Duration::from_secs(config.tenant_purge_after_s), Duration::from_secs(config.idempotency_ttl_s));
        tokio::spawn(async move {
            let (state, stop) = housekeeping;
            state.lifecycle.run_housekeeping(Duration::from_secs(1), purge_after, idempotency_ttl, stop).await
        });
        if let Some(listener) = metrics_listener {
            let (metrics_app, metrics_stop) = (api::metrics::router(state.clone()), stop.clone());
            api_runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, metrics_app)
                    .with_graceful_shutdown(async move { metrics_stop.wait().await })
                    .await
            });
        }
        let app = api::router(state);
        let serve_stop = stop.clone();
        let served = api_runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app).with_graceful_shutdown(async move { serve_stop.wait().await }).await
        });
        let engine = Arc::new(tokio::sync::Mutex::new(Some(engine)));
        let engine_for_task = engine.clone();
        let task = tokio::spawn(async move {
            served.await.context("API task")??;
            if let Some(engine) = engine_for_task.lock().await.take() {
                engine.stop().await?;
            }
            Ok(())
        });
        Ok(Self { addr, metrics_addr, engine, stop, task, api_runtime: Some(api_runtime) })
    }

    /// Graceful stop: no new requests, in-flight ones finish, the pipeline drains, stores flush.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.trigger();
        let result = (&mut self.task).await.context("server task")?;
        if let Some(rt) = self.api_runtime.take() {
            rt.shutdown_background();
        }
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A runtime may not be dropped from async code; let its thread wind down on its own.
        if let Some(rt) = self.api_runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `herald worker`: the chosen stages of the distributed deployment, without the API; each
/// stage takes a fair share of its partitions by lease and hands them back on SIGTERM after
/// draining.
pub async fn run_worker(config: HeraldConfig) -> anyhow::Result<()> {
    if config.backend.kind != BackendKind::Distributed {
        return Err(crate::config::ConfigError(
            "herald worker shares partitions with other processes: it needs [backend] kind = \"distributed\"".into(),
        )
        .into());
    }
    let secrets = config.secrets()?;
    let mut engine_config = engine_config(&config)?;
    engine_config.secrets = Some(secrets.clone());
    let engine = Engine::start(engine_config).await?;
    // No public API: `/metrics`, `/readyz` and `/healthz` on the metrics listener only.
    let stop = pipeline::Shutdown::new();
    if let Some(at) = config.metrics_addr() {
        let state = api::AppState::new(
            engine.store.clone(),
            engine.state.clone(),
            engine.topics.clone(),
            config.auth()?,
            api::metrics::Metrics::new(engine.board.clone()),
            secrets,
            api::ApiConfig::default(),
        );
        let listener =
            tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding the metrics listener {at}"))?;
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, api::metrics::router(state))
                .with_graceful_shutdown(async move { stopped.wait().await })
                .await
        });
    }
    tracing::info!(stages = ?config.stages, "worker started");
    crate::wait_for_signal().await;
    tracing::info!("draining: finishing steps in hand, then handing partitions back");
    let result = engine.stop().await;
    stop.trigger();
    result
}

pub async fn run(config: HeraldConfig) -> anyhow::Result<()> {
    let server = Server::start(&config).await?;
    eprintln!("herald: listening on http://{} (data in {})", server.addr, config.data_dir.display());
    if let Some(m) = server.metrics_addr {
        eprintln!("herald: metrics on http://{m}/metrics");
    }
    crate::wait_for_signal().await;
    eprintln!("herald: draining...");
    server.stop().await?;
    eprintln!("herald: stopped cleanly");
    Ok(())
}
