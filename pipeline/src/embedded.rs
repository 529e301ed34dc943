//! The embedded topic backend: durable, partitioned logs in one fjall database.
//!
//! Records are stored under `(topic, partition, offset)` and survive a process kill once
//! `produce` returns; consumer-group offsets are stored beside them. Records every registered
//! group has committed past are deleted, so the log holds only unconsumed records — at most
//! `capacity` per partition for bounded topics, since producers wait for consumers.
//!
//! It is not: shared between processes, or replicated. The distributed deployment puts Fluvio
//! behind the same [`TopicBackend`] trait.

use crate::topic::{partition_for, ConsumerRecord, Offset, Partition, ProducerRecord, TopicBackend, TopicSpec};
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
    /// Committed offset per group.
    groups: Mutex<HashMap<String, Offset>>,
    /// Lowest committed offset over the registered groups (records below it are deleted).
    low: watch::Sender<Offset>,
}

struct TopicState {
    spec: TopicSpec,
    partitions: Vec<PartitionState>,
}

/// Durable in-process topics (see the module docs).
pub struct EmbeddedTopics {
    db: Database,
    records: Keyspace,
    offsets: Keyspace,
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

impl EmbeddedTopics {
    /// Opens the topics in `dir`, recovering end offsets and group offsets.
    pub fn open(dir: &Path, specs: &[TopicSpec], config: EmbeddedTopicsConfig) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir).cache_size(config.cache_bytes).worker_threads(config.worker_threads).open()?;
        let memtable = config.memtable_bytes;
        let records = db.keyspace("records", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable)
                // Index and filter blocks beyond L0 go through the bounded block cache instead of
                // being pinned: pinned blocks grow with the data, the cache does not.
                .index_block_pinning_policy(PinningPolicy::new([true, false]))
                .filter_block_pinning_policy(PinningPolicy::all(false))
        })?;
        let offsets = db.keyspace("offsets", KeyspaceCreateOptions::default)?;
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
                let low = groups.values().copied().min().unwrap_or(0);
                let last = records
                    .range(record_key(spec.name, p, 0)..=record_key(spec.name, p, u64::MAX))
                    .next_back()
                    .map(|g| g.key())
                    .transpose()?
                    .map(|k| {
                        let mut buf = [0u8; 8];
                        buf.copy_from_slice(&k[k.len() - 8..]);
                        u64::from_be_bytes(buf) + 1
                    });
                let end = last.unwrap_or(0).max(groups.values().copied().max().unwrap_or(0));
                partitions.push(PartitionState {
                    end: watch::Sender::new(end),
                    groups: Mutex::new(groups),
                    low: watch::Sender::new(low),
                });
            }
            topics.insert(spec.name, TopicState { spec: *spec, partitions });
        }
        let mode = if config.sync { PersistMode::SyncData } else { PersistMode::Buffer };
        Ok(Arc::new(Self {
            db,
            records,
            offsets,
            topics,
            write_lock: Mutex::new(()),
            mode,
            write_budget: config.write_budget_bytes,
        }))
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

    /// Waits while a bounded partition holds `capacity` or more unconsumed records.
    async fn wait_for_room(&self, topic: &TopicState, partition: Partition) {
        let (Some(capacity), Some(state)) = (topic.spec.capacity, topic.partitions.get(partition as usize)) else {
            return;
        };
        let mut low = state.low.subscribe();
        loop {
            let has_groups = !state.groups.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
            if !has_groups || *state.end.borrow() < *low.borrow_and_update() + capacity {
                return;
            }
            if low.changed().await.is_err() {
                return;
            }
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

    async fn produce(&self, records: Vec<ProducerRecord>) -> Result<Vec<(Partition, Offset)>> {
        let mut targets = Vec::with_capacity(records.len());
        for r in &records {
            let topic = self.topic(r.topic)?;
            let p = partition_for(r.key, topic.spec.partitions);
            self.wait_for_room(topic, p).await;
            targets.push(p);
        }
        // Bounded write-buffer memory: wait (bounded) while flushes catch up.
        for _ in 0..5_000 {
            if self.db.write_buffer_size() <= self.write_budget {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: HashMap<(&str, Partition), Offset> = HashMap::new();
        let mut batch = self.db.batch().durability(Some(self.mode));
        let mut placed = Vec::with_capacity(records.len());
        for (r, &p) in records.iter().zip(&targets) {
            let state = self.partition(r.topic, p)?;
            let offset = next.entry((r.topic, p)).or_insert_with(|| *state.end.borrow());
            let value = codec::encode(&(r.key, &r.headers, &r.value))?;
            batch.insert(&self.records, record_key(r.topic, p, *offset), value);
            placed.push((p, *offset));
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
            let mut buf = [0u8; 8];
            buf.copy_from_slice(&k[k.len() - 8..]);
            let (key, headers, value): (u64, Headers, Vec<u8>) = codec::decode(&v)?;
            out.push(ConsumerRecord { partition, offset: u64::from_be_bytes(buf), key, headers, value });
        }
        Ok(out)
    }

    async fn committed(&self, topic: &str, group: &str, partition: Partition) -> Result<Offset> {
        let state = self.partition(topic, partition)?;
        let mut groups = state.groups.lock().unwrap_or_else(|p| p.into_inner());
        let low = *state.low.borrow();
        Ok(*groups.entry(group.to_string()).or_insert(low))
    }

    async fn commit(&self, topic: &str, group: &str, partition: Partition, next: Offset) -> Result<()> {
        let state = self.partition(topic, partition)?;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (old_low, new_low) = {
            let mut groups = state.groups.lock().unwrap_or_else(|p| p.into_inner());
            groups.insert(group.to_string(), next);
            (*state.low.borrow(), groups.values().copied().min().unwrap_or(next))
        };
        let mut batch = self.db.batch().durability(Some(self.mode));
        batch.insert(&self.offsets, offset_key(topic, group, partition), codec::encode(&next)?);
        // Trim what every group has consumed.
        for offset in old_low..new_low {
            batch.remove(&self.records, record_key(topic, partition, offset));
        }
        batch.commit()?;
        if new_low != old_low {
            state.low.send_replace(new_low);
        }
        Ok(())
    }

    async fn end_offset(&self, topic: &str, partition: Partition) -> Result<Offset> {
        Ok(*self.partition(topic, partition)?.end.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TopicSpec = TopicSpec { name: "t", partitions: 2, capacity: Some(3) };

    fn rec(key: u64, v: u8) -> ProducerRecord {
        ProducerRecord { topic: "t", key, headers: Headers::default(), value: vec![v] }
    }

    #[tokio::test]
    async fn produce_fetch_commit_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        {
            let topics = EmbeddedTopics::open(dir.path(), &[T], Default::default()).unwrap();
            assert_eq!(topics.committed("t", "g", 0).await.unwrap(), 0);
            let placed = topics.produce(vec![rec(0, 1), rec(1, 2), rec(2, 3)]).await.unwrap();
            assert_eq!(placed, vec![(0, 0), (1, 0), (0, 1)]);
            let got = topics.fetch("t", 0, 0, 10, Duration::ZERO).await.unwrap();
            assert_eq!(got.iter().map(|r| r.value[0]).collect::<Vec<_>>(), vec![1, 3]);
            topics.commit("t", "g", 0, 1).await.unwrap();
        }
        // Reopen: offsets and unconsumed records survive; consumed ones are trimmed.
        let topics = EmbeddedTopics::open(dir.path(), &[T], Default::default()).unwrap();
        assert_eq!(topics.committed("t", "g", 0).await.unwrap(), 1);
        assert_eq!(topics.end_offset("t", 0).await.unwrap(), 2);
        let got = topics.fetch("t", 0, 0, 10, Duration::ZERO).await.unwrap();
        assert_eq!(got.iter().map(|r| (r.offset, r.value[0])).collect::<Vec<_>>(), vec![(1, 3)]);
    }

    #[tokio::test]
    async fn fetch_waits_for_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let topics = EmbeddedTopics::open(dir.path(), &[T], Default::default()).unwrap();
        let t2 = topics.clone();
        let reader = tokio::spawn(async move { t2.fetch("t", 1, 0, 10, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        topics.produce(vec![rec(1, 9)]).await.unwrap();
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, vec![9]);
    }

    #[tokio::test]
    async fn producer_blocks_when_partition_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let topics = EmbeddedTopics::open(dir.path(), &[T], Default::default()).unwrap();
        topics.committed("t", "g", 0).await.unwrap(); // register the consumer group
        topics.produce(vec![rec(0, 1), rec(0, 2), rec(0, 3)]).await.unwrap();
        let t2 = topics.clone();
        let blocked = tokio::spawn(async move { t2.produce(vec![rec(0, 4)]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "a full partition must block its producer");
        topics.commit("t", "g", 0, 1).await.unwrap();
        let placed = tokio::time::timeout(Duration::from_secs(5), blocked).await.unwrap().unwrap().unwrap();
        assert_eq!(placed, vec![(0, 3)]);
    }
}
