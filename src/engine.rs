//! The engine: every stage in one process, on the backends the configuration chose (the
//! embedded default, or the distributed Fluvio/ScyllaDB/Redis deployment, see
//! [`crate::backend`]). The composition root: the only place that wires stages to topics.

use crate::backend::{BackendChoice, Backends};
use anyhow::Context;
use pipeline::{runner, topics, Board, RunnerConfig, Runtime, Shutdown, StageHandle, TopicBackend};
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use storage::state::SharedState;
use storage::Store;
use tokio::task::JoinSet;

/// Everything the engine needs; defaults are the zero-config embedded mode.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The embedded backends' directory (and the simulator's call log).
    pub data_dir: PathBuf,
    pub backend: BackendChoice,
    pub chunk: ChunkConfig,
    pub throttle: ThrottleConfig,
    pub deliver: DeliverConfig,
    pub simulator: SimulatorConfig,
    /// Opens tenant provider secrets (None: tenant providers are unavailable, the default
    /// provider still works).
    pub secrets: Option<storage::secrets::SecretKey>,
    /// Which addresses tenant providers may reach.
    pub addresses: AddressPolicy,
    /// How stale a campaign status the stages read may be (a pause takes effect within it).
    pub control_ttl: Duration,
    /// Which stages this process runs ([`STAGE_ROLES`]); `None`: all of them.
    pub stages: Option<Vec<String>>,
    /// `Some(ttl)`: share each stage's partitions with other processes by lease (workers of
    /// the distributed deployment); `None`: this process consumes every partition.
    pub partition_leases: Option<Duration>,
}

/// The stage roles a process can run (`herald worker --stages`): deliver includes redelivery,
/// reconcile its three inputs (outcomes, receipts, dead letters).
pub const STAGE_ROLES: [&str; 5] = ["chunk", "render", "throttle", "deliver", "reconcile"];

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            backend: BackendChoice::embedded(crate::backend::DEFAULT_MEMORY_BUDGET_MIB << 20),
            chunk: ChunkConfig::default(),
            throttle: ThrottleConfig::default(),
            deliver: DeliverConfig::default(),
            simulator: SimulatorConfig::default(),
            secrets: None,
            addresses: AddressPolicy::default(),
            control_ttl: Duration::from_millis(200),
            stages: None,
            partition_leases: None,
        }
    }
}

/// How each stage is driven. Records of the message topics carry up to ~1,000 messages, so a
/// partition keeps fewer of them in memory; deliver runs many lanes at once because a paced
/// lane mostly waits for its slots.
pub fn runner_configs() -> [(&'static str, RunnerConfig); 5] {
    let base = RunnerConfig::default();
    let messages = RunnerConfig { max_batch: 1, lane_queue: 2, partition_records: 4, ..base.clone() };
    [
        ("chunk", RunnerConfig { max_batch: 1, ..base.clone() }),
        ("render", RunnerConfig { max_batch: 1, lane_queue: 2, partition_records: 16, ..base.clone() }),
        ("throttle", RunnerConfig { concurrent_lanes: 32, ..messages.clone() }),
        ("deliver", RunnerConfig { concurrent_lanes: 32, ..messages }),
        ("reconcile", RunnerConfig { max_batch: 16, ..base }),
    ]
}

fn runner_config(name: &str) -> RunnerConfig {
    runner_configs().into_iter().find(|(n, _)| *n == name).map(|(_, c)| c).unwrap_or_default()
}

/// This process's name among workers: host, pid and a random part (a restarted worker is a
/// new holder, so it never mistakes its predecessor's leases for its own).
fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{}-{:08x}", host.trim(), std::process::id(), rand::random::<u32>())
}

/// A running engine.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub state: Arc<dyn SharedState>,
    pub topics: Arc<dyn TopicBackend>,
    pub simulator: Arc<Simulator>,
    /// What the runners and stages publish (metrics).
    pub board: Arc<Board>,
    /// The one owner of campaign status changes.
    pub lifecycle: Arc<Lifecycle>,
    pub stages: Vec<StageHandle>,
    shutdown: Shutdown,
    tasks: JoinSet<pipeline::Result<()>>,
    backends: Backends,
}

impl Engine {
    /// Opens the backends and starts every stage; chunk resumes campaigns a previous run left
    /// mid-way, and the runners pick up what the topics and held stores still have.
    pub async fn start(config: EngineConfig) -> anyhow::Result<Self> {
        let backends = Backends::open(&config.backend, &config.data_dir).await?;
        let (store, state, topics) = (backends.store.clone(), backends.state.clone(), backends.topics.clone());
        let runtime = Runtime {
            backend: topics.clone(),
            held: backends.held.clone(),
            shutdown: Shutdown::new(),
            board: Arc::default(),
            assignment: config.partition_leases.map(|ttl| pipeline::runner::assign::Assignment {
                leases: Arc::new(storage::state::StateLeases(state.clone())),
                holder: worker_name(),
                ttl,
            }),
        };
        let runs = |role: &str| config.stages.as_ref().is_none_or(|s| s.iter().any(|r| r == role));
        let simulator = Simulator::start(config.simulator.clone(), runtime.backend.clone(), runtime.shutdown.clone())
            .context("starting the simulator provider")?;

        let control = Arc::new(CampaignControl::new(store.clone(), state.clone(), config.control_ttl));
        let chunk = Chunk::new(store.clone(), store.clone(), store.clone(), control.clone(), config.chunk.clone());
        let render = Render::new(store.clone(), control.clone());
        let throttle = Throttle::new(
            store.clone(),
            state.clone(),
            control.clone(),
            runtime.backend.clone(),
            config.throttle.clone(),
        );
        let senders = Arc::new(Senders::new(
            store.clone(),
            state.clone(),
            simulator.clone(),
            config.secrets.clone(),
            config.deliver.call_timeout,
            config.addresses,
        ));
        let deliver = Arc::new(Deliver::new(store.clone(), state.clone(), senders, control, config.deliver.clone()));
        let reconciler = Reconciler::new(store.clone(), store.clone());

        let mut tasks = JoinSet::new();
        let mut stages = Vec::new();
        if runs("chunk") {
            stages.push(runner::spawn(&mut tasks, Arc::new(chunk), topics::SENDS, &runtime, runner_config("chunk")));
        }
        if runs("render") {
            stages.push(runner::spawn(&mut tasks, Arc::new(render), topics::CHUNKS, &runtime, runner_config("render")));
        }
        if runs("throttle") {
            stages.push(runner::spawn(
                &mut tasks,
                Arc::new(throttle),
                topics::RENDERED,
                &runtime,
                runner_config("throttle"),
            ));
        }
        if runs("deliver") {
            let config = runner_config("deliver");
            stages.push(runner::spawn(&mut tasks, deliver.clone(), topics::READY, &runtime, config.clone()));
            stages.push(runner::spawn(&mut tasks, Arc::new(Redeliver::new(deliver)), topics::RETRY, &runtime, config));
        }
        if runs("reconcile") {
            // One owner per partition number for all three inputs: one writer of a campaign's
            // rows and counters (see `stages::reconcile`).
            let (config, joint) = (runner_config("reconcile"), runner::Joint::new("reconcile"));
            let outcomes = Arc::new(ReconcileOutcomes(reconciler.clone()));
            stages.push(runner::spawn_in(
                &mut tasks,
                outcomes,
                topics::OUTCOMES,
                &runtime,
                config.clone(),
                Some(&joint),
            ));
            let receipts = Arc::new(ReconcileReceipts(reconciler.clone()));
            stages.push(runner::spawn_in(
                &mut tasks,
                receipts,
                topics::RECEIPTS,
                &runtime,
                config.clone(),
                Some(&joint),
            ));
            let letters = Arc::new(ReconcileDeadLetters(reconciler));
            stages.push(runner::spawn_in(&mut tasks, letters, topics::DLQ, &runtime, config, Some(&joint)));
            joint.start(&mut tasks, runtime.assignment.clone(), runtime.shutdown.clone());
        }
        let lifecycle = Arc::new(Lifecycle::new(store.clone(), state.clone(), runtime.backend.clone()));
        Ok(Self {
            store,
            state,
            topics,
            simulator,
            board: runtime.board,
            lifecycle,
            stages,
            shutdown: runtime.shutdown,
            tasks,
            backends,
        })
    }

    /// Sends a campaign (through the lifecycle, like the API does).
    pub async fn trigger(&self, tenant: TenantId, campaign: CampaignId) -> anyhow::Result<()> {
        self.lifecycle.apply(tenant, campaign, Action::Send, &Default::default()).await?;
        Ok(())
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Graceful drain: stop fetching, finish and commit steps in hand, flush the stores.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "stage loop failed"),
                Err(e) => tracing::error!(error = %e, "stage task panicked"),
            }
        }
        self.backends.flush()
    }
}
