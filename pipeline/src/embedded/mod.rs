//! The embedded topic backend: durable, partitioned logs in one fjall database, plus the
//! runners' held store ([`EmbeddedHeld`]) in the same database.
//!
//! Records are stored under `(topic, partition, offset)` and survive a process kill once
//! `produce` returns; consumer-group offsets are stored beside them. Retention: records every
//! consumer group of a topic (as declared when opening) has committed past are deleted, so the
//! log holds only unconsumed records. `produce` never waits for room; backpressure is the
//! runner's (see `crate::room`).
//!
//! It is not: shared between processes, or replicated. The distributed deployment puts Fluvio
//! behind the same [`TopicBackend`] trait.

mod held;

pub use held::EmbeddedHeld;

use crate::topic::{ConsumerRecord, Offset, Partition, ProducerRecord, TopicBackend, TopicSpec};
use crate::{Error, Result};
use async_trait::async_trait;
use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use schemas::{codec, envelope::Headers};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Embedded topics settings.
#[derive(Debug, Clone)]
pub struct EmbeddedTopicsConfig {
    /// Memtable size of the records table, bytes.
    pub memtable_bytes: u64,
    pub cache_bytes: u64,
    /// fsync every produce/commit (survives power loss) instead of flushing to the OS only
    /// (survives a process kill).
    pub sync: bool,
    /// Memtable bytes above which producers wait for flushes (bounds write-buffer memory).
    pub write_budget_bytes: u64,
    /// fjall background threads (see `storage::EmbeddedStoreConfig::worker_threads`).
    pub worker_threads: usize,
}

impl Default for EmbeddedTopicsConfig {
    fn default() -> Self {
        Self {
            memtable_bytes: 32 << 20,
            cache_bytes: 16 << 20,
            sync: false,
            write_budget_bytes: 128 << 20,
            worker_threads: 2,
        }
    }
}

struct PartitionState {
    /// Next offset to assign; only touched under `EmbeddedTopics::write_lock`.
    end: watch::Sender<Offset>,
    /// Committed offset per group (only groups that committed).
    groups: Mutex<HashMap<String, Offset>>,
    /// The oldest offset still stored.
    start: Mutex<Offset>,
}

struct TopicState {
    spec: TopicSpec,
    /// The consumer groups whose progress lets records go.
    consumers: Vec<&'static str>,
    partitions: Vec<PartitionState>,
}

/// Durable in-process topics (see the module docs).
pub struct EmbeddedTopics {
    db: Database,
    records: Keyspace,
    offsets: Keyspace,
    held: Keyspace,
    topics: HashMap<&'static str, TopicState>,
    write_lock: Mutex<()>,
    mode: PersistMode,
    write_budget: u64,
}

fn record_key(topic: &str, partition: Partition, offset: Offset) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 13);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn offset_key(topic: &str, group: &str, partition: Partition) -> Vec<u8> {
    format!("{topic}\0{group}\0{partition}").into_bytes()
}

fn offset_of(key: &[u8]) -> Offset {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&key[key.len() - 8..]);
    u64::from_be_bytes(buf)
}

impl EmbeddedTopics {
    /// Opens the topics in `dir` with the dataflow's consumer groups (`crate::topics::STAGES`),
    /// recovering end offsets and group offsets.
    pub fn open(dir: &Path, specs: &[TopicSpec], config: EmbeddedTopicsConfig) -> Result<Arc<Self>> {
        let consumers: Vec<(&'static str, &'static str)> =
            crate::topics::STAGES.iter().map(|s| (s.input.name, s.name)).collect();
        Self::open_with_consumers(dir, specs, &consumers, config)
    }

    /// Opens the topics with an explicit `(topic, consumer group)` list.
    pub fn open_with_consumers(
        dir: &Path,
        specs: &[TopicSpec],
        consumers: &[(&'static str, &'static str)],
        config: EmbeddedTopicsConfig,
    ) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir).cache_size(config.cache_bytes).worker_threads(config.worker_threads).open()?;
        let memtable = config.memtable_bytes;
        let tuned = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable)
                // Index and filter blocks beyond L0 go through the bounded block cache instead of
                // being pinned: pinned blocks grow with the data, the cache does not.
                .index_block_pinning_policy(PinningPolicy::new([true, false]))
                .filter_block_pinning_policy(PinningPolicy::all(false))
        };
        let records = db.keyspace("records", tuned)?;
        let offsets = db.keyspace("offsets", KeyspaceCreateOptions::default)?;
        let held = db.keyspace("held", tuned)?;
        let mut topics = HashMap::new();
        for spec in specs {
            let mut partitions = Vec::with_capacity(spec.partitions as usize);
            for p in 0..spec.partitions {
                let mut groups = HashMap::new();
                let prefix = format!("{}\0", spec.name);
                for guard in offsets.prefix(prefix.as_bytes()) {
                    let (k, v) = guard.into_inner()?;
                    let key = String::from_utf8_lossy(&k).into_owned();
                    let mut parts = key.split('\0');
                    let (_, group, part) = (parts.next(), parts.next(), parts.next());
                    if let (Some(group), Some(part)) = (group, part) {
                        if part.parse::<Partition>().ok() == Some(p) {
                            groups.insert(group.to_string(), codec::decode::<Offset>(&v)?);
                        }
                    }
                }
                let range = record_key(spec.name, p, 0)..=record_key(spec.name, p, u64::MAX);
                let first = records.range(range.clone()).next().map(|g| g.key()).transpose()?.map(|k| offset_of(&k));
                let last = records.range(range).next_back().map(|g| g.key()).transpose()?.map(|k| offset_of(&k) + 1);
                let end = last.unwrap_or(0).max(groups.values().copied().max().unwrap_or(0));
                partitions.push(PartitionState {
                    end: watch::Sender::new(end),
                    groups: Mutex::new(groups),
                    start: Mutex::new(first.unwrap_or(end)),
                });
            }
            let consumers = consumers.iter().filter(|(t, _)| *t == spec.name).map(|(_, g)| *g).collect();
            topics.insert(spec.name, TopicState { spec: *spec, consumers, partitions });
        }
        let mode = if config.sync { PersistMode::SyncData } else { PersistMode::Buffer };
        Ok(Arc::new(Self {
            db,
            records,
            offsets,
            held,
            topics,
            write_lock: Mutex::new(()),
            mode,
            write_budget: config.write_budget_bytes,
        }))
    }

    /// The held store of the runners on these topics (same database).
    pub fn held(self: &Arc<Self>) -> Arc<EmbeddedHeld> {
        Arc::new(EmbeddedHeld::new(self.clone()))
    }

    fn topic(&self, name: &str) -> Result<&TopicState> {
        self.topics.get(name).ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    fn partition(&self, name: &str, partition: Partition) -> Result<&PartitionState> {
        self.topic(name)?
            .partitions
            .get(partition as usize)
            .ok_or_else(|| Error::UnknownPartition { topic: name.to_string(), partition })
    }

    fn batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(Some(self.mode))
    }

    /// Waits (bounded) while memtables exceed the write budget, so writers slow down to the
    /// flush rate instead of growing memory.
    async fn within_budget(&self) {
        for _ in 0..5_000 {
            if self.db.write_buffer_size() <= self.write_budget {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Flushes and syncs everything (graceful shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

#[async_trait]
impl TopicBackend for EmbeddedTopics {
    fn spec(&self, topic: &str) -> Result<TopicSpec> {
        Ok(self.topic(topic)?.spec)
    }

    async fn produce(&self, records: Vec<ProducerRecord>) -> Result<Vec<Offset>> {
        for r in &records {
            self.partition(r.topic, r.partition)?;
        }
        self.within_budget().await;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: HashMap<(&str, Partition), Offset> = HashMap::new();
        let mut batch = self.batch();
        let mut placed = Vec::with_capacity(records.len());
        for r in &records {
            let state = self.partition(r.topic, r.partition)?;
            let offset = next.entry((r.topic, r.partition)).or_insert_with(|| *state.end.borrow());
            let value = codec::encode(&(r.key, &r.headers, &r.value))?;
            batch.insert(&self.records, record_key(r.topic, r.partition, *offset), value);
            placed.push(*offset);
            *offset += 1;
        }
        batch.commit()?;
        for ((topic, p), end) in next {
            self.partition(topic, p)?.end.send_replace(end);
        }
        Ok(placed)
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: Partition,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumerRecord>> {
        let state = self.partition(topic, partition)?;
        let mut end = state.end.subscribe();
        if *end.borrow_and_update() <= from {
            let _ = tokio::time::timeout(max_wait, end.wait_for(|e| *e > from)).await;
        }
        let mut out = Vec::new();
        let range = record_key(topic, partition, from)..=record_key(topic, partition, u64::MAX);
        for guard in self.records.range(range).take(max_records) {
            let (k, v) = guard.into_inner()?;
            let (key, headers, value): (u64, Headers, Vec<u8>) = codec::decode(&v)?;
            out.push(ConsumerRecord { partition, offset: offset_of(&k), key, headers, value });
        }
        Ok(out)
    }

    async fn committed(&self, topic: &str, group: &str, partition: Partition) -> Result<Option<Offset>> {
        let state = self.partition(topic, partition)?;
        let groups = state.groups.lock().unwrap_or_else(|p| p.into_inner());
        Ok(groups.get(group).copied())
    }

    async fn commit(&self, topic: &str, group: &str, partition: Partition, next: Offset) -> Result<()> {
        let t = self.topic(topic)?;
        let state = self.partition(topic, partition)?;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old_start = *state.start.lock().unwrap_or_else(|p| p.into_inner());
        let new_start = {
            let mut groups = state.groups.lock().unwrap_or_else(|p| p.into_inner());
            groups.insert(group.to_string(), next);
            // Records go once every declared consumer has committed past them.
            let lows: Option<Vec<Offset>> = t.consumers.iter().map(|g| groups.get(*g).copied()).collect();
            match lows {
                Some(lows) if !lows.is_empty() => lows.into_iter().min().unwrap_or(old_start).max(old_start),
                _ => old_start,
            }
        };
        let mut batch = self.batch();
        batch.insert(&self.offsets, offset_key(topic, group, partition), codec::encode(&next)?);
        for offset in old_start..new_start {
            batch.remove(&self.records, record_key(topic, partition, offset));
        }
        batch.commit()?;
        *state.start.lock().unwrap_or_else(|p| p.into_inner()) = new_start;
        Ok(())
    }

    async fn end_offset(&self, topic: &str, partition: Partition) -> Result<Offset> {
        Ok(*self.partition(topic, partition)?.end.borrow())
    }

    async fn start_offset(&self, topic: &str, partition: Partition) -> Result<Offset> {
        Ok(*self.partition(topic, partition)?.start.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    const T: TopicSpec = TopicSpec { name: "t", partitions: 2, capacity: Some(3) };

    fn open(dir: &Path) -> Arc<EmbeddedTopics> {
        EmbeddedTopics::open_with_consumers(dir, &conformance::specs(), &conformance::consumers(), Default::default())
            .unwrap()
    }

    #[tokio::test]
    async fn passes_the_topic_backend_kit() {
        let dir = tempfile::tempdir().unwrap();
        conformance::topic_backend(&(open(dir.path()) as Arc<dyn TopicBackend>)).await;
    }

    #[tokio::test]
    async fn passes_the_held_store_kit() {
        let dir = tempfile::tempdir().unwrap();
        let topics = open(dir.path());
        conformance::held_store(topics.held().as_ref()).await;
    }

    #[tokio::test]
    async fn recovers_offsets_and_unconsumed_records_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |partition, v| ProducerRecord {
            topic: "t",
            partition,
            key: 0,
            headers: Headers::default(),
            value: vec![v],
        };
        {
            let topics =
                EmbeddedTopics::open_with_consumers(dir.path(), &[T], &[("t", "g")], Default::default()).unwrap();
            topics.produce(vec![rec(0, 1), rec(1, 2), rec(0, 3)]).await.unwrap();
            topics.commit("t", "g", 0, 1).await.unwrap();
        }
        let topics = EmbeddedTopics::open_with_consumers(dir.path(), &[T], &[("t", "g")], Default::default()).unwrap();
        assert_eq!(topics.committed("t", "g", 0).await.unwrap(), Some(1));
        assert_eq!(topics.committed("t", "other", 0).await.unwrap(), None, "reading never registers a group");
        assert_eq!((topics.start_offset("t", 0).await.unwrap(), topics.end_offset("t", 0).await.unwrap()), (1, 2));
        let got = topics.fetch("t", 0, 0, 10, Duration::ZERO).await.unwrap();
        assert_eq!(got.iter().map(|r| (r.offset, r.value[0])).collect::<Vec<_>>(), vec![(1, 3)]);
    }
}
