//! Which backends Herald runs on, and opening them: the embedded default (segment files and
//! fjall in the data dir) or the distributed deployment (Fluvio topics, ScyllaDB store and
//! held records, Redis shared state). Everything above this module sees only the contracts
//! (`TopicBackend`, `HeldRecords`, `Store`, `SharedState`).

use anyhow::Context;
use pipeline::fluvio::{FluvioTopics, FluvioTopicsConfig};
use pipeline::{topics, EmbeddedTopics, EmbeddedTopicsConfig, HeldRecords, TopicBackend};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use storage::redis::{RedisConfig, RedisState};
use storage::scylla::{ScyllaConfig, ScyllaStore};
use storage::state::SharedState;
use storage::{EmbeddedState, EmbeddedStore, EmbeddedStoreConfig, Store};

/// `[backend]`, `[fluvio]`, `[scylla]`, `[redis]` of `herald.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSettings {
    /// `embedded` (default) or `distributed` (`HERALD_BACKEND`).
    pub kind: BackendKind,
    /// Distributed: how long a worker's partition lease lasts unrenewed, seconds (how long a
    /// dead worker's partitions wait for another).
    pub lease_ttl_s: u64,
    /// Distributed: partitions of every dataflow topic (`HERALD_PARTITIONS`): the most workers
    /// one stage can spread over. Every process of a deployment must agree, and an existing
    /// Fluvio topic with another count is refused. The embedded backend keeps 8.
    pub partitions: u32,
    /// Embedded: what the two embedded databases may hold in memory, MiB
    /// (`HERALD_MEMORY_BUDGET_MIB`); split by [`BackendChoice::embedded`].
    pub memory_budget_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Embedded,
    Distributed,
}

impl Default for BackendSettings {
    fn default() -> Self {
        Self {
            kind: BackendKind::Embedded,
            lease_ttl_s: 10,
            partitions: pipeline::topic::DEFAULT_PARTITIONS,
            memory_budget_mib: DEFAULT_MEMORY_BUDGET_MIB,
        }
    }
}

/// `[fluvio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FluvioSettings {
    /// The SC's public address (`HERALD_FLUVIO_ENDPOINT`).
    pub endpoint: String,
    /// Replicas per partition.
    pub replication: u32,
    /// Prefix of Herald's topic and consumer names.
    pub prefix: String,
}

impl Default for FluvioSettings {
    fn default() -> Self {
        let d = FluvioTopicsConfig::default();
        Self { endpoint: d.endpoint, replication: d.replication, prefix: d.prefix }
    }
}

/// `[scylla]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaSettings {
    /// Contact points (`HERALD_SCYLLA_NODES`, comma-separated).
    pub nodes: Vec<String>,
    /// (`HERALD_SCYLLA_KEYSPACE`).
    pub keyspace: String,
    /// Keyspace replication as CQL, used by `herald migrate` when it creates the keyspace.
    pub replication: String,
    /// `local_quorum` (default), `quorum`, `local_one`, `one` or `all`.
    pub consistency: String,
    /// How long message-log rows are kept, days.
    pub retention_days: u64,
    /// Wait for schema agreement after each schema change (keep on; off only for a test server
    /// that cannot answer the agreement queries).
    pub schema_agreement: bool,
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        let d = ScyllaConfig::default();
        Self {
            nodes: d.nodes,
            keyspace: d.keyspace,
            replication: d.replication,
            consistency: "local_quorum".into(),
            retention_days: d.retention.as_secs() / 86_400,
            schema_agreement: d.schema_agreement,
        }
    }
}

/// `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:port/db` (`HERALD_REDIS_URL`).
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379/0".into(), prefix: "herald".into() }
    }
}

/// The distributed backends' settings, resolved.
#[derive(Debug, Clone)]
pub struct DistributedConfig {
    /// Partitions of every dataflow topic.
    pub partitions: u32,
    pub fluvio: FluvioTopicsConfig,
    pub scylla: ScyllaConfig,
    pub redis: RedisConfig,
}

/// The embedded databases' default memory budget, MiB: at 1M recipients × 4 tenants the whole
/// process peaks near 310 MiB instead of ~400 with no measurable cost in throughput
/// (ARCHITECTURE.md, "Write path and memory budget").
pub const DEFAULT_MEMORY_BUDGET_MIB: u64 = 128;
/// The smallest memory budget Herald starts with, MiB.
pub const MIN_MEMORY_BUDGET_MIB: u64 = 16;

/// Which backends an engine opens.
#[derive(Debug, Clone)]
pub enum BackendChoice {
    /// In the engine's data dir.
    Embedded {
        store: EmbeddedStoreConfig,
        topics: EmbeddedTopicsConfig,
    },
    Distributed(Box<DistributedConfig>),
}

impl BackendChoice {
    /// The embedded backends within `budget` bytes of memtables and block caches, split as
    /// ARCHITECTURE.md's "Memory budget" explains: the store's write buffers take half (the
    /// message log, claims and counters take most writes), its block cache an eighth; the
    /// topics keep only offsets and held records in fjall (records are segment files), so an
    /// eighth of write buffers and a sixteenth of cache; the rest, 3/16, is headroom for what
    /// fjall does not let us bound: flush and compaction buffers (~27 MiB at the 1M peak).
    pub fn embedded(budget: u64) -> Self {
        let store = EmbeddedStoreConfig {
            write_budget_bytes: budget / 2,
            memtable_bytes: budget / 16,
            cache_bytes: budget / 8,
            ..EmbeddedStoreConfig::default()
        };
        let topics = EmbeddedTopicsConfig {
            write_budget_bytes: budget / 8,
            memtable_bytes: budget / 32,
            cache_bytes: budget / 16,
            ..EmbeddedTopicsConfig::default()
        };
        BackendChoice::Embedded { store, topics }
    }
}

impl DistributedConfig {
    pub fn from_settings(
        fluvio: &FluvioSettings,
        scylla: &ScyllaSettings,
        redis: &RedisSettings,
    ) -> anyhow::Result<Self> {
        let consistency = parse_consistency(&scylla.consistency)?;
        anyhow::ensure!(!scylla.nodes.is_empty(), "scylla.nodes is empty");
        anyhow::ensure!(scylla.retention_days > 0, "scylla.retention_days must be at least 1");
        Ok(Self {
            partitions: pipeline::topic::DEFAULT_PARTITIONS,
            fluvio: FluvioTopicsConfig {
                endpoint: fluvio.endpoint.clone(),
                replication: fluvio.replication.max(1),
                prefix: fluvio.prefix.clone(),
                ..Default::default()
            },
            scylla: ScyllaConfig {
                nodes: scylla.nodes.clone(),
                keyspace: scylla.keyspace.clone(),
                replication: scylla.replication.clone(),
                consistency,
                retention: Duration::from_secs(scylla.retention_days * 86_400),
                schema_agreement: scylla.schema_agreement,
                ..Default::default()
            },
            redis: RedisConfig { prefix: redis.prefix.clone(), ..RedisConfig::new(redis.url.clone()) },
        })
    }
}

fn parse_consistency(name: &str) -> anyhow::Result<scylla::statement::Consistency> {
    use scylla::statement::Consistency::*;
    Ok(match name {
        "local_quorum" => LocalQuorum,
        "quorum" => Quorum,
        "local_one" => LocalOne,
        "one" => One,
        "all" => All,
        other => anyhow::bail!("scylla.consistency {other:?}: use local_quorum, quorum, local_one, one or all"),
    })
}

/// Open backends behind their contracts.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub state: Arc<dyn SharedState>,
    pub topics: Arc<dyn TopicBackend>,
    pub held: Arc<dyn HeldRecords>,
    /// The embedded backends, flushed on a graceful stop.
    embedded: Option<(Arc<EmbeddedStore>, Arc<EmbeddedTopics>)>,
}

impl Backends {
    pub async fn open(choice: &BackendChoice, data_dir: &Path) -> anyhow::Result<Self> {
        match choice {
            BackendChoice::Embedded { store, topics: topics_config } => {
                let store = Arc::new(
                    EmbeddedStore::open(&data_dir.join("store"), store.clone())
                        .with_context(|| format!("opening the store in {}", data_dir.display()))?,
                );
                let topics = EmbeddedTopics::open(&data_dir.join("topics"), &topics::all(), topics_config.clone())
                    .with_context(|| format!("opening the topics in {}", data_dir.display()))?;
                Ok(Self {
                    state: Arc::new(EmbeddedState::new(store.clone())),
                    held: topics.held(),
                    embedded: Some((store.clone(), topics.clone())),
                    store,
                    topics,
                })
            }
            BackendChoice::Distributed(config) => {
                pipeline::topic::configure_partitions(config.partitions).map_err(anyhow::Error::msg)?;
                let topics = FluvioTopics::connect(config.fluvio.clone(), topics::all())
                    .await
                    .with_context(|| format!("connecting to Fluvio at {}", config.fluvio.endpoint))?;
                let store = Arc::new(
                    ScyllaStore::connect(config.scylla.clone())
                        .await
                        .with_context(|| format!("connecting to ScyllaDB at {:?}", config.scylla.nodes))?,
                );
                let state = RedisState::new(config.redis.clone())
                    .with_context(|| format!("configuring Redis at {}", config.redis.url))?;
                state.ping().await.with_context(|| format!("reaching Redis at {}", config.redis.url))?;
                Ok(Self {
                    state: Arc::new(state),
                    held: store.clone(),
                    store,
                    topics: Arc::new(topics),
                    embedded: None,
                })
            }
        }
    }

    /// Makes the embedded backends' writes durable against power loss (the distributed ones
    /// are durable on every write).
    pub fn flush(&self) -> anyhow::Result<()> {
        if let Some((store, topics)) = &self.embedded {
            store.flush()?;
            topics.flush()?;
        }
        Ok(())
    }
}
