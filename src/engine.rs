//! The embedded engine: every stage in one process on the embedded store and topics.

use anyhow::Context;
use pipeline::{
    runner, topics, EmbeddedTopics, EmbeddedTopicsConfig, RunnerConfig, Shutdown, StageMetrics, TopicBackend,
};
use schemas::{CampaignId, TenantId};
use stages::chunk::{Chunk, ChunkConfig};
use stages::control::CampaignControl;
use stages::deliver::providers::address::AddressPolicy;
use stages::deliver::senders::Senders;
use stages::deliver::simulator::{Simulator, SimulatorConfig};
use stages::deliver::{Deliver, DeliverConfig, Redeliver};
use stages::lifecycle::{Action, Lifecycle};
use stages::reconcile::{ReconcileDeadLetters, ReconcileOutcomes, ReconcileReceipts, Reconciler};
use stages::render::Render;
use stages::throttle::{Throttle, ThrottleConfig};
use stages::SharedStore;
use std::path::PathBuf;
use std::sync::Arc;
use storage::{EmbeddedStore, EmbeddedStoreConfig};
use tokio::task::JoinSet;

/// Everything the embedded engine needs; defaults are the zero-config embedded mode.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub store: EmbeddedStoreConfig,
    pub topics: EmbeddedTopicsConfig,
    pub chunk: ChunkConfig,
    pub throttle: ThrottleConfig,
    pub deliver: DeliverConfig,
    pub simulator: SimulatorConfig,
    /// Opens tenant provider secrets (None: tenant providers are unavailable, the default
    /// provider still works).
    pub secrets: Option<storage::secrets::SecretKey>,
    /// Which addresses tenant providers may reach.
    pub addresses: AddressPolicy,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: EmbeddedStoreConfig::default(),
            topics: EmbeddedTopicsConfig::default(),
            chunk: ChunkConfig::default(),
            throttle: ThrottleConfig::default(),
            deliver: DeliverConfig::default(),
            simulator: SimulatorConfig::default(),
            secrets: None,
            addresses: AddressPolicy::default(),
        }
    }
}

/// A running embedded engine.
pub struct Engine {
    pub store: Arc<EmbeddedStore>,
    pub topics: Arc<EmbeddedTopics>,
    pub simulator: Arc<Simulator>,
    pub reconciler: Arc<Reconciler>,
    pub senders: Arc<Senders>,
    pub stage_metrics: Vec<(&'static str, Arc<StageMetrics>)>,
    chunk: Arc<Chunk>,
    shutdown: Shutdown,
    tasks: JoinSet<pipeline::Result<()>>,
}

impl Engine {
    /// Opens the data dir and starts every stage; resumes campaigns a previous run left running.
    pub async fn start(config: EngineConfig) -> anyhow::Result<Self> {
        let store = Arc::new(
            EmbeddedStore::open(&config.data_dir.join("store"), config.store.clone())
                .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
        );
        let topics = EmbeddedTopics::open(&config.data_dir.join("topics"), &topics::all(), config.topics.clone())
            .with_context(|| format!("opening the topics in {}", config.data_dir.display()))?;
        let shared: SharedStore = store.clone();
        let backend: Arc<dyn TopicBackend> = topics.clone();
        let shutdown = Shutdown::new();
        let simulator = Simulator::start(config.simulator.clone(), backend.clone(), shutdown.clone())
            .context("starting the simulator provider")?;

        let mut tasks = JoinSet::new();
        let mut stage_metrics = Vec::new();
        let run = RunnerConfig::default();
        let control = Arc::new(CampaignControl::new(shared.clone(), std::time::Duration::from_millis(200)));
        let chunk = Chunk::new(shared.clone(), backend.clone(), config.chunk.clone(), shutdown.clone());
        let render = Arc::new(Render::new(shared.clone(), control.clone()));
        let throttle =
            Throttle::new(shared.clone(), control.clone(), backend.clone(), config.throttle.clone(), shutdown.clone());
        let senders = Arc::new(Senders::new(
            shared.clone(),
            simulator.clone(),
            config.secrets.clone(),
            config.deliver.call_timeout,
            config.addresses,
        ));
        let deliver = Deliver::new(shared.clone(), senders.clone(), control.clone(), config.deliver.clone());
        let redeliver = Arc::new(Redeliver::new(deliver.clone(), shutdown.clone()));
        let reconciler = Reconciler::new(shared.clone());

        macro_rules! start {
            ($name:literal, $stage:expr, $topic:expr, $cfg:expr) => {
                stage_metrics
                    .push(($name, runner::spawn(&mut tasks, $stage, $topic, backend.clone(), $cfg, shutdown.clone())));
            };
        }
        start!("chunk", chunk.clone(), topics::SENDS, run.clone());
        start!("render", render, topics::CHUNKS, run.clone());
        start!("throttle", throttle, topics::RENDERED, RunnerConfig { max_batch: 1, ..run.clone() });
        start!("deliver", deliver, topics::READY, RunnerConfig { max_batch: 1, ..run.clone() });
        start!("redeliver", redeliver, topics::RETRY, RunnerConfig { max_batch: 1, ..run.clone() });
        start!(
            "reconcile",
            Arc::new(ReconcileOutcomes(reconciler.clone())),
            topics::OUTCOMES,
            RunnerConfig { max_batch: 16, ..run.clone() }
        );
        start!(
            "reconcile-receipts",
            Arc::new(ReconcileReceipts(reconciler.clone())),
            topics::RECEIPTS,
            RunnerConfig { max_batch: 16, ..run.clone() }
        );
        start!("reconcile-dlq", Arc::new(ReconcileDeadLetters(reconciler.clone())), topics::DLQ, run.clone());

        let resumed = chunk.resume().await.context("resuming running campaigns")?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed campaigns left running by a previous run");
        }
        Ok(Self { store, topics, simulator, reconciler, senders, stage_metrics, chunk, shutdown, tasks })
    }

    /// Sends a campaign (through the lifecycle, like the API does).
    pub async fn trigger(&self, tenant: TenantId, campaign: CampaignId) -> anyhow::Result<()> {
        let lifecycle = Lifecycle::new(self.store.clone(), self.topics.clone());
        lifecycle.apply(tenant, campaign, Action::Send, &Default::default()).await?;
        Ok(())
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Graceful drain: stop fetching, finish and commit batches in hand, flush the stores.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "stage loop failed"),
                Err(e) => tracing::error!(error = %e, "stage task panicked"),
            }
        }
        self.chunk.drain().await;
        self.store.flush()?;
        self.topics.flush()?;
        Ok(())
    }
}
