//! The embedded topic backend: durable, partitioned logs on local disk, plus the runners'
//! held store ([`EmbeddedHeld`]).
//!
//! Records live in append-only segment files, one directory per partition ([`segments`]): a
//! produce is one sequential write per partition, durable against a process kill once it
//! returns (and against power loss with `sync`). Consumer-group offsets and held records are
//! small keyed rows in one fjall database beside them. Retention: once every consumer group of
//! a topic (as declared when opening) has committed past a record it is gone for readers
//! (`start_offset`), and whole segments below that point are deleted. `produce` never waits for
//! room; backpressure is the runner's (see `crate::room`).
//!
//! Topics written by an older Herald (records as fjall rows) are moved into segments when
//! opened.
//!
//! It is not: shared between processes, or replicated. The distributed deployment puts Fluvio
//! behind the same [`TopicBackend`] trait.

mod held;
mod segments;
pub mod writes;

pub use writes::{tally, Batch, WriteTally};

pub use held::EmbeddedHeld;

use crate::topic::{ConsumerRecord, Offset, Partition, ProducerRecord, TopicBackend, TopicSpec};
use crate::{Error, Result};
use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use schemas::{codec, envelope::Headers};
use segments::PartitionLog;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Embedded topics settings.
#[derive(Debug, Clone)]
pub struct EmbeddedTopicsConfig {
    /// Memtable size of the held records table, bytes.
    pub memtable_bytes: u64,
    pub cache_bytes: u64,
    /// fsync every produce/commit (survives power loss) instead of handing writes to the OS
    /// only (survives a process kill).
    pub sync: bool,
    /// Memtable bytes above which writers wait for flushes (bounds write-buffer memory).
    pub write_budget_bytes: u64,
    /// fjall background threads (see `storage::EmbeddedStoreConfig::worker_threads`).
    pub worker_threads: usize,
    /// Size at which a partition's active segment file is closed and a new one started.
    pub segment_bytes: u64,
}

impl Default for EmbeddedTopicsConfig {
    fn default() -> Self {
        Self {
            memtable_bytes: 16 << 20,
            cache_bytes: 8 << 20,
            sync: false,
            write_budget_bytes: 64 << 20,
            worker_threads: 1,
            segment_bytes: 16 << 20,
        }
    }
}

/// Memtable size of the offsets keyspace. It holds one live row per (topic, group, partition),
/// a few KiB, and every commit supersedes one, so its memtable is almost all dead versions.
/// fjall's default (64 MiB) let it be flushed only when the journal reached its own bound: 8.9
/// MiB at most through a 10M x 4 run against 0.9 at 1M. fjall keeps this from the keyspace's
/// creation, so an older store keeps 64 MiB.
const OFFSETS_MEMTABLE_BYTES: u64 = 1 << 20;

struct PartitionState {
    log: Mutex<PartitionLog>,
    /// Next offset to assign (mirrors the log, for waiting readers).
    end: watch::Sender<Offset>,
    /// Committed offset per group (only groups that committed).
    groups: Mutex<HashMap<String, Offset>>,
    /// The oldest offset readers may still get.
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
    offsets: Keyspace,
    held: Keyspace,
    topics: HashMap<&'static str, TopicState>,
    /// Serialises the held store's read-modify-write of lane summaries.
    write_lock: Mutex<()>,
    mode: PersistMode,
    write_budget: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn legacy_key(topic: &str, partition: Partition, offset: Offset) -> Vec<u8> {
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

/// The committed offsets stored for one partition of `topic`.
fn stored_groups(offsets: &Keyspace, topic: &str, partition: Partition) -> Result<HashMap<String, Offset>> {
    let mut groups = HashMap::new();
    for guard in offsets.prefix(format!("{topic}\0").as_bytes()) {
        let (k, v) = guard.into_inner()?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let mut parts = key.split('\0').skip(1);
        if let (Some(group), Some(part)) = (parts.next(), parts.next()) {
            if part.parse::<Partition>().ok() == Some(partition) {
                groups.insert(group.to_string(), codec::decode::<Offset>(&v)?);
            }
        }
    }
    Ok(groups)
}

/// Moves a partition's records stored as fjall rows by an older Herald into its (empty) log.
fn import_legacy(legacy: &Keyspace, log: &mut PartitionLog, topic: &str, partition: Partition) -> Result<()> {
    let range = legacy_key(topic, partition, 0)..=legacy_key(topic, partition, u64::MAX);
    let mut records = Vec::new();
    let mut first = None;
    for guard in legacy.range(range) {
        let (k, v) = guard.into_inner()?;
        let offset = offset_of(&k);
        let first = *first.get_or_insert(offset);
        if offset != first + records.len() as u64 {
            return Err(Error::Fatal(format!("{topic}/{partition}: stored records skip offset {offset}")));
        }
        records.push(codec::decode::<(u64, Headers, Vec<u8>)>(&v)?);
    }
    if let Some(first) = first {
        log.import(first, &records)?;
        tracing::info!(topic, partition, records = records.len(), "moved stored records into segments");
    }
    Ok(())
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
        let offsets =
            db.keyspace("offsets", || KeyspaceCreateOptions::default().max_memtable_size(OFFSETS_MEMTABLE_BYTES))?;
        let held = held::open_keyspace(&db, config.memtable_bytes)?;
        let legacy = if db.keyspace_exists("records") {
            Some(db.keyspace("records", KeyspaceCreateOptions::default)?)
        } else {
            None
        };
        let mut topics = HashMap::new();
        for spec in specs {
            let declared: Vec<&'static str> =
                consumers.iter().filter(|(t, _)| *t == spec.name).map(|(_, g)| *g).collect();
            let mut partitions = Vec::with_capacity(spec.partitions() as usize);
            for p in 0..spec.partitions() {
                let groups = stored_groups(&offsets, spec.name, p)?;
                let highest = groups.values().copied().max().unwrap_or(0);
                let path = dir.join("segments").join(spec.name).join(p.to_string());
                let mut log = PartitionLog::open(path, highest, config.segment_bytes, config.sync)?;
                if let Some(legacy) = &legacy {
                    if log.end() == log.first() {
                        import_legacy(legacy, &mut log, spec.name, p)?;
                    }
                }
                let passed: Option<Vec<Offset>> = declared.iter().map(|g| groups.get(*g).copied()).collect();
                let passed = passed.and_then(|lows| lows.into_iter().min()).unwrap_or(0);
                let start = log.first().max(passed.min(log.end()));
                partitions.push(PartitionState {
                    end: watch::Sender::new(log.end()),
                    log: Mutex::new(log),
                    groups: Mutex::new(groups),
                    start: Mutex::new(start),
                });
            }
            topics.insert(spec.name, TopicState { spec: *spec, consumers: declared, partitions });
        }
        if let Some(legacy) = legacy {
            db.delete_keyspace(legacy)?;
        }
        let mode = if config.sync { PersistMode::SyncData } else { PersistMode::Buffer };
        Ok(Arc::new(Self {
            db,
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

    fn batch(&self) -> Batch {
        Batch::new(self.db.batch().durability(Some(self.mode)))
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
        for topic in self.topics.values() {
            for p in &topic.partitions {
                lock(&p.log).sync()?;
            }
        }
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

#[async_trait]
impl TopicBackend for EmbeddedTopics {
    fn reads_anywhere(&self) -> bool {
        // A fetch plans its reads from the offset index of the segments: no cursor to move.
        true
    }

    fn spec(&self, topic: &str) -> Result<TopicSpec> {
        Ok(self.topic(topic)?.spec)
    }

    async fn produce(&self, records: Vec<ProducerRecord>) -> Result<Vec<Offset>> {
        // Records grouped by partition, first appearance order; each group is one write.
        let mut groups: Vec<(&PartitionState, Vec<usize>)> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let state = self.partition(r.topic, r.partition)?;
            match groups.iter_mut().find(|(s, _)| std::ptr::eq(*s, state)) {
                Some((_, members)) => members.push(i),
                None => groups.push((state, vec![i])),
            }
        }
        let mut placed = vec![0; records.len()];
        let mut frames = Vec::new();
        let mut starts = Vec::new();
        for (state, members) in groups {
            frames.clear();
            starts.clear();
            let mut log = lock(&state.log);
            let first = log.end();
            for (n, &i) in members.iter().enumerate() {
                let r = &records[i];
                starts.push(frames.len() as u32);
                segments::encode_frame(&mut frames, first + n as u64, r.key, &r.headers, &r.value)?;
                placed[i] = first + n as u64;
            }
            log.append(&frames, &starts)?;
            state.end.send_replace(log.end());
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
        let from = from.max(*lock(&state.start));
        let mut end = state.end.subscribe();
        if *end.borrow_and_update() <= from {
            let _ = tokio::time::timeout(max_wait, end.wait_for(|e| *e > from)).await;
        }
        let Some(plan) = lock(&state.log).plan(from, max_records) else { return Ok(Vec::new()) };
        Ok(plan
            .read()?
            .into_iter()
            .map(|r| ConsumerRecord { partition, offset: r.offset, key: r.key, headers: r.headers, value: r.value })
            .collect())
    }

    async fn committed(&self, topic: &str, group: &str, partition: Partition) -> Result<Option<Offset>> {
        let state = self.partition(topic, partition)?;
        Ok(lock(&state.groups).get(group).copied())
    }

    async fn commit(&self, topic: &str, group: &str, partition: Partition, next: Offset) -> Result<()> {
        let t = self.topic(topic)?;
        let state = self.partition(topic, partition)?;
        let new_start = {
            let mut groups = lock(&state.groups);
            let mut batch = self.batch();
            batch.insert(&self.offsets, offset_key(topic, group, partition), codec::encode(&next)?);
            batch.commit()?;
            groups.insert(group.to_string(), next);
            // Records go once every declared consumer has committed past them.
            let lows: Option<Vec<Offset>> = t.consumers.iter().map(|g| groups.get(*g).copied()).collect();
            lows.and_then(|lows| lows.into_iter().min())
        };
        if let Some(low) = new_start {
            let mut log = lock(&state.log);
            let low = low.min(log.end());
            let mut start = lock(&state.start);
            if low > *start {
                *start = low;
                drop(start);
                log.retain_from(low)?;
            }
        }
        Ok(())
    }

    async fn end_offset(&self, topic: &str, partition: Partition) -> Result<Offset> {
        Ok(*self.partition(topic, partition)?.end.borrow())
    }

    async fn start_offset(&self, topic: &str, partition: Partition) -> Result<Offset> {
        Ok(*lock(&self.partition(topic, partition)?.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    const T: TopicSpec = TopicSpec::new("t", 2, Some(3));

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

    #[tokio::test]
    async fn committed_offsets_do_not_pile_up_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let topics = EmbeddedTopics::open_with_consumers(dir.path(), &[T], &[("t", "g")], Default::default()).unwrap();
        // Each commit supersedes the last: a few MiB of dead versions, one live row.
        for next in 1..=200_000u64 {
            topics.commit("t", "g", (next % 2) as Partition, next).await.unwrap();
        }
        let mut buffered = topics.db.write_buffer_size();
        for _ in 0..500 {
            if buffered <= OFFSETS_MEMTABLE_BYTES {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            buffered = topics.db.write_buffer_size();
        }
        assert!(buffered <= OFFSETS_MEMTABLE_BYTES, "offsets keep {buffered} bytes of memtables after the flushes");
        assert_eq!(topics.committed("t", "g", 0).await.unwrap(), Some(200_000));
    }

    #[tokio::test]
    async fn records_an_older_herald_stored_as_rows_are_moved_into_segments() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let rows = db.keyspace("records", KeyspaceCreateOptions::default).unwrap();
            let offsets = db.keyspace("offsets", KeyspaceCreateOptions::default).unwrap();
            for offset in 3..6u64 {
                let value = codec::encode(&(offset, Headers::default(), vec![offset as u8])).unwrap();
                rows.insert(legacy_key("t", 1, offset), value).unwrap();
            }
            offsets.insert(offset_key("t", "g", 1), codec::encode(&3u64).unwrap()).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        for _ in 0..2 {
            let topics =
                EmbeddedTopics::open_with_consumers(dir.path(), &[T], &[("t", "g")], Default::default()).unwrap();
            assert_eq!((topics.start_offset("t", 1).await.unwrap(), topics.end_offset("t", 1).await.unwrap()), (3, 6));
            let got = topics.fetch("t", 1, 3, 10, Duration::ZERO).await.unwrap();
            assert_eq!(
                got.iter().map(|r| (r.offset, r.key, r.value[0])).collect::<Vec<_>>(),
                [(3, 3, 3), (4, 4, 4), (5, 5, 5)]
            );
            assert!(!topics.db.keyspace_exists("records"), "the rows are gone once moved");
        }
    }
}
