//! The distributed topic backend: Herald's topics as Fluvio topics, behind the same
//! [`TopicBackend`] contract the embedded backend keeps (see `crate::topic`).
//!
//! - **Topics** are created at start (`FluvioTopics::connect`) with the configured partitions,
//!   replication and retention; an existing topic with another partition count is a fatal
//!   misconfiguration, never silently used. Fluvio names allow `[a-z0-9-]` only, so
//!   `campaign.sends` is `{prefix}campaign-sends`.
//! - **Placement**: Herald picks every record's partition; [`envelope::KeyedPartitioner`] reads
//!   it back from the record key. Headers travel in the value ([`envelope`]).
//! - **Durability**: a produce returns once the SPU acknowledged the records at
//!   `Isolation::ReadCommitted` (replicated to the in-sync replicas).
//! - **Reads** ([`reader`]) check that offsets arrive contiguous and re-seek from the first
//!   missing one: the 0.50.1 client silently skips a producer batch at fetch-size boundaries.
//! - **Group offsets** ([`offsets`]) are Fluvio consumer offsets (`offset_consumer`, manual
//!   commit and flush), committed by the runner only after what the records produced is durable.
//! - **Errors**: anything from the client (connection, timeout, leader moving) is transient and
//!   drops the cached producers and streams, and after repeated failures the connection, so the
//!   next call starts afresh; unknown topics and partitions, bad records and misconfiguration
//!   are fatal.
//!
//! It is not: a place that waits for room (backpressure is the runner's, `crate::room`), or a
//! retention policy: Fluvio drops records by age and size (`retention`), so a consumer group
//! that falls behind retention loses records; size retention above the topics' capacities.

pub mod envelope;
mod offsets;
mod reader;

use crate::topic::{ConsumerRecord, Offset, Partition, ProducerRecord, TopicBackend, TopicSpec};
use crate::{Error, Result};
use ::fluvio::metadata::topic::{CleanupPolicy, SegmentBasedPolicy, TopicSpec as FluvioTopicSpec};
use ::fluvio::{Fluvio, FluvioClusterConfig, Isolation, TopicProducerConfigBuilder, TopicProducerPool};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How Herald reaches and lays out its Fluvio topics.
#[derive(Debug, Clone)]
pub struct FluvioTopicsConfig {
    /// The SC's public address, `host:port`.
    pub endpoint: String,
    /// Replicas per partition (at most the number of SPUs).
    pub replication: u32,
    /// Prepended to every topic and consumer-group name (one cluster, several Heralds).
    pub prefix: String,
    /// Bytes a read asks for at once. Large (32 MiB): the 0.50.1 client's skip happens at
    /// fetch boundaries, so fewer boundaries mean fewer re-seeks.
    pub fetch_max_bytes: i32,
    /// Age after which Fluvio may drop a record, read or not.
    pub retention: Duration,
    /// Bytes a producer gathers into one batch.
    pub batch_bytes: usize,
    /// Largest produce request; a record bigger than this is refused (fatal).
    pub max_request_bytes: usize,
    /// How long a produce, admin call or connection may take before it counts as failed.
    pub timeout: Duration,
}

impl Default for FluvioTopicsConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9003".into(),
            replication: 1,
            prefix: "herald-".into(),
            fetch_max_bytes: 32 << 20,
            retention: Duration::from_secs(7 * 24 * 3600),
            batch_bytes: 1 << 20,
            max_request_bytes: 16 << 20,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Failures in a row after which the connection itself is dropped and made again.
const RECONNECT_AFTER: u32 = 3;

/// Herald's topics on a Fluvio cluster (see the module docs).
pub struct FluvioTopics {
    config: FluvioTopicsConfig,
    specs: HashMap<&'static str, TopicSpec>,
    client: Mutex<Option<Arc<Fluvio>>>,
    failures: AtomicU32,
    producers: tokio::sync::Mutex<HashMap<&'static str, Arc<TopicProducerPool>>>,
    readers: reader::Readers,
    offsets: offsets::Offsets,
}

/// A client failure: transient (see the module docs).
pub(crate) fn transient(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Transient(format!("fluvio: {what}: {e}"))
}

impl FluvioTopics {
    /// Connects and makes sure every topic in `specs` exists with its partition count.
    pub async fn connect(config: FluvioTopicsConfig, specs: Vec<TopicSpec>) -> Result<Self> {
        let specs: HashMap<_, _> = specs.into_iter().map(|s| (s.name, s)).collect();
        let this = Self {
            readers: reader::Readers::new(config.fetch_max_bytes),
            offsets: offsets::Offsets::new(config.fetch_max_bytes),
            config,
            specs,
            client: Mutex::new(None),
            failures: AtomicU32::new(0),
            producers: tokio::sync::Mutex::new(HashMap::new()),
        };
        this.create_topics().await?;
        Ok(this)
    }

    /// The Fluvio name of a Herald topic.
    pub fn fluvio_name(&self, topic: &str) -> String {
        format!("{}{}", self.config.prefix, topic.replace(['.', '_'], "-"))
    }

    /// How many times a read found a gap and re-seeked (the 0.50.1 client's skip).
    pub fn reseeks(&self) -> u64 {
        self.readers.reseeks()
    }

    fn group_name(&self, group: &str) -> String {
        format!("{}{group}", self.config.prefix)
    }

    /// Whether the cluster answers (for readiness).
    pub async fn ping(&self) -> Result<()> {
        let fluvio = self.client().await?;
        let admin = tokio::time::timeout(self.config.timeout, fluvio.admin())
            .await
            .map_err(|_| self.failed("admin", "timed out"))?;
        let listed = tokio::time::timeout(self.config.timeout, admin.all::<FluvioTopicSpec>()).await;
        match listed {
            Ok(Ok(_)) => self.succeeded(),
            Ok(Err(e)) => Err(self.failed("listing topics", e)),
            Err(_) => Err(self.failed("listing topics", "timed out")),
        }
    }

    async fn client(&self) -> Result<Arc<Fluvio>> {
        if let Some(c) = self.client.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let cluster = FluvioClusterConfig::new(self.config.endpoint.clone());
        let fluvio = tokio::time::timeout(self.config.timeout, Fluvio::connect_with_config(&cluster))
            .await
            .map_err(|_| transient(&format!("connecting to {}", self.config.endpoint), "timed out"))?
            .map_err(|e| transient(&format!("connecting to {}", self.config.endpoint), e))?;
        let fluvio = Arc::new(fluvio);
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(fluvio.clone());
        Ok(fluvio)
    }

    /// Counts a client failure: cached producers and streams go, and after
    /// [`RECONNECT_AFTER`] in a row the connection too.
    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= RECONNECT_AFTER {
            self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.failures.store(0, Ordering::Relaxed);
        }
        if let Ok(mut producers) = self.producers.try_lock() {
            producers.clear();
        }
        self.readers.clear();
        self.offsets.clear();
        transient(what, e)
    }

    fn succeeded(&self) -> Result<()> {
        self.failures.store(0, Ordering::Relaxed);
        Ok(())
    }

    async fn create_topics(&self) -> Result<()> {
        let fluvio = self.client().await?;
        let admin = fluvio.admin().await;
        let existing = admin.all::<FluvioTopicSpec>().await.map_err(|e| transient("listing topics", e))?;
        for spec in self.specs.values() {
            let name = self.fluvio_name(spec.name);
            if let Some(found) = existing.iter().find(|t| t.name == name) {
                let partitions = found.spec.partitions();
                if partitions != spec.partitions() {
                    return Err(Error::Fatal(format!(
                        "fluvio topic {name} has {partitions} partitions, Herald is configured for {}",
                        spec.partitions()
                    )));
                }
                continue;
            }
            let mut topic = FluvioTopicSpec::new_computed(spec.partitions(), self.config.replication, None);
            let retention = u32::try_from(self.config.retention.as_secs()).unwrap_or(u32::MAX);
            topic.set_cleanup_policy(CleanupPolicy::Segment(SegmentBasedPolicy { time_in_seconds: retention }));
            if let Err(e) = admin.create(name.clone(), false, topic).await {
                // Another process may have created it between the listing and now.
                let again = admin.all::<FluvioTopicSpec>().await.map_err(|e| transient("listing topics", e))?;
                if !again.iter().any(|t| t.name == name) {
                    return Err(Error::Fatal(format!("creating fluvio topic {name}: {e}")));
                }
            }
        }
        self.wait_for_leaders().await
    }

    /// Waits until every partition of every topic answers for its offsets (a new topic's
    /// partitions take a moment to get a leader).
    async fn wait_for_leaders(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.timeout.max(Duration::from_secs(30));
        for spec in self.specs.values() {
            for partition in 0..spec.partitions() {
                loop {
                    match self.end_offset(spec.name, partition).await {
                        Ok(_) => break,
                        Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        }
        Ok(())
    }

    async fn producer(&self, topic: &'static str) -> Result<Arc<TopicProducerPool>> {
        let mut producers = self.producers.lock().await;
        if let Some(p) = producers.get(topic) {
            return Ok(p.clone());
        }
        let fluvio = self.client().await?;
        let config = TopicProducerConfigBuilder::default()
            .partitioner(Arc::new(envelope::KeyedPartitioner))
            .batch_size(self.config.batch_bytes)
            .max_request_size(self.config.max_request_bytes)
            .linger(Duration::ZERO)
            .timeout(self.config.timeout)
            .isolation(Isolation::ReadCommitted)
            .build()
            .map_err(|e| Error::Fatal(format!("fluvio producer config: {e}")))?;
        let producer = fluvio
            .topic_producer_with_config(self.fluvio_name(topic), config)
            .await
            .map_err(|e| self.failed(&format!("opening a producer on {topic}"), e))?;
        let producer = Arc::new(producer);
        producers.insert(topic, producer.clone());
        Ok(producer)
    }

    /// `(start, end)` of a partition, from its leader.
    async fn bounds(&self, topic: &str, partition: Partition) -> Result<(Offset, Offset)> {
        self.checked(topic, partition)?;
        let fluvio = self.client().await?;
        let name = self.fluvio_name(topic);
        self.offsets.bounds(&fluvio, &name, partition).await.map_err(|e| self.failed("reading offsets", e))
    }

    fn checked(&self, topic: &str, partition: Partition) -> Result<TopicSpec> {
        let spec = self.spec(topic)?;
        if partition >= spec.partitions() {
            return Err(Error::UnknownPartition { topic: topic.to_string(), partition });
        }
        Ok(spec)
    }
}

#[async_trait]
impl TopicBackend for FluvioTopics {
    fn spec(&self, topic: &str) -> Result<TopicSpec> {
        self.specs.get(topic).copied().ok_or_else(|| Error::UnknownTopic(topic.to_string()))
    }

    async fn produce(&self, records: Vec<ProducerRecord>) -> Result<Vec<Offset>> {
        for r in &records {
            self.checked(r.topic, r.partition)?;
            if r.value.len() >= self.config.max_request_bytes {
                return Err(Error::Fatal(format!(
                    "a record of {} bytes for {}, above max_request_bytes {}",
                    r.value.len(),
                    r.topic,
                    self.config.max_request_bytes
                )));
            }
        }
        let mut pending = Vec::with_capacity(records.len());
        let mut touched: Vec<(&'static str, Arc<TopicProducerPool>)> = Vec::new();
        for r in records {
            let producer = self.producer(r.topic).await?;
            let value = envelope::encode_value(&r.headers, &r.value)?;
            let sent = producer
                .send(envelope::key(r.partition, r.key).to_vec(), value)
                .await
                .map_err(|e| self.failed(&format!("producing to {}", r.topic), e))?;
            pending.push((r.topic, r.partition, sent));
            if !touched.iter().any(|(t, _)| *t == r.topic) {
                touched.push((r.topic, producer));
            }
        }
        for (topic, producer) in &touched {
            tokio::time::timeout(self.config.timeout, producer.flush())
                .await
                .map_err(|_| self.failed(&format!("flushing {topic}"), "timed out"))?
                .map_err(|e| self.failed(&format!("flushing {topic}"), e))?;
        }
        let mut offsets = Vec::with_capacity(pending.len());
        for (topic, partition, sent) in pending {
            let meta = sent.wait().await.map_err(|e| self.failed(&format!("producing to {topic}"), e))?;
            if meta.partition_id() != partition {
                return Err(Error::Fatal(format!(
                    "fluvio put a record for {topic}/{partition} on partition {}",
                    meta.partition_id()
                )));
            }
            offsets.push(u64::try_from(meta.offset()).map_err(|_| Error::Fatal("a negative offset".into()))?);
        }
        self.succeeded()?;
        Ok(offsets)
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: Partition,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumerRecord>> {
        self.checked(topic, partition)?;
        let fluvio = self.client().await?;
        let name = self.fluvio_name(topic);
        let ends = || self.end_offset(topic, partition);
        match self.readers.fetch(&fluvio, &name, partition, from, max_records, max_wait, ends).await {
            Ok(records) => {
                self.succeeded()?;
                Ok(records)
            }
            Err(Error::Transient(e)) => Err(self.failed(&format!("reading {topic}/{partition}"), e)),
            Err(e) => Err(e),
        }
    }

    async fn committed(&self, topic: &str, group: &str, partition: Partition) -> Result<Option<Offset>> {
        self.checked(topic, partition)?;
        let fluvio = self.client().await?;
        let (name, group) = (self.fluvio_name(topic), self.group_name(group));
        offsets::committed(&fluvio, &name, &group, partition)
            .await
            .map_err(|e| self.failed(&format!("reading the offset of {group} on {topic}/{partition}"), e))
    }

    async fn commit(&self, topic: &str, group: &str, partition: Partition, next: Offset) -> Result<()> {
        self.checked(topic, partition)?;
        let fluvio = self.client().await?;
        let (name, group_name) = (self.fluvio_name(topic), self.group_name(group));
        match self.offsets.commit(&fluvio, &name, &group_name, partition, next).await {
            Ok(()) => self.succeeded(),
            Err(Error::Transient(e)) => Err(self.failed(&format!("committing {group} on {topic}/{partition}"), e)),
            Err(e) => Err(e),
        }
    }

    async fn end_offset(&self, topic: &str, partition: Partition) -> Result<Offset> {
        Ok(self.bounds(topic, partition).await?.1)
    }

    async fn start_offset(&self, topic: &str, partition: Partition) -> Result<Offset> {
        Ok(self.bounds(topic, partition).await?.0)
    }
}

#[cfg(test)]
mod tests;
