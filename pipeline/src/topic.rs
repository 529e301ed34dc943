//! Typed topics and the byte-level topic backend contract: what Fluvio gives, and no more.
//!
//! - Partitioned append: the producer (Herald, through [`crate::Emitter`]) picks each record's
//!   partition; the backend never chooses one.
//! - Offsets per partition, dense from 0; stored consumer offsets per group; at-least-once.
//! - `produce` is durable when it returns and never waits for room: backpressure is the
//!   runner's business (it reads consumers' committed offsets), not the backend's.
//! - Retention is the backend's business: records every consumer group of a topic has
//!   committed past may disappear (`start_offset` says where a partition begins now).
//! - Errors say whether retrying can help ([`crate::Error::is_transient`]).

use crate::Result;
use async_trait::async_trait;
use schemas::envelope::Headers;
use std::marker::PhantomData;
use std::time::Duration;

pub type Partition = u32;
pub type Offset = u64;

/// How a topic is laid out: its name, partition count and how many unconsumed records a
/// partition may hold before producers wait (None: unbounded, for feedback loops such as
/// `delivery.retry` where waiting could deadlock the consumer that produces to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    /// A fixed count, or [`CONFIGURED`]: read it through [`TopicSpec::partitions`].
    partitions: u32,
    pub capacity: Option<u64>,
}

/// A topic whose partition count is the deployment's ([`configure_partitions`]).
pub const CONFIGURED: u32 = 0;

/// Partitions of the dataflow's topics unless configured ([`configure_partitions`]).
pub const DEFAULT_PARTITIONS: u32 = 8;

static PARTITIONS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Sets the partition count of the dataflow's topics for this process (`[backend]
/// partitions` of the distributed deployment), once, before any topic is used; every process
/// of a deployment must agree (Fluvio refuses a topic found with another count). Errors if a
/// different count was set or already read.
pub fn configure_partitions(n: u32) -> std::result::Result<(), String> {
    if !(1..=1_024).contains(&n) {
        return Err(format!("partitions must be 1 to 1024, got {n}"));
    }
    let current = *PARTITIONS.get_or_init(|| n);
    if current == n {
        Ok(())
    } else {
        Err(format!("topics already use {current} partitions; cannot switch to {n}"))
    }
}

impl TopicSpec {
    pub const fn new(name: &'static str, partitions: u32, capacity: Option<u64>) -> Self {
        Self { name, partitions, capacity }
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> u32 {
        match self.partitions {
            CONFIGURED => *PARTITIONS.get_or_init(|| DEFAULT_PARTITIONS),
            n => n,
        }
    }

    /// Whether two specs always have the same partition count (for compile-time checks).
    pub const fn same_partitions(&self, other: &TopicSpec) -> bool {
        self.partitions == other.partitions
    }
}

/// A topic carrying records of type `T`, keyed by a function of the record: what its consumer
/// needs together on one partition (see [`crate::topics`], where every topic says its key).
/// Producers never choose a key, so no call site can put a record on the wrong partition.
pub struct Topic<T> {
    pub spec: TopicSpec,
    key: fn(&T) -> u64,
    _record: PhantomData<fn() -> T>,
}

impl<T> Topic<T> {
    pub const fn new(name: &'static str, partitions: u32, capacity: Option<u64>, key: fn(&T) -> u64) -> Self {
        Self { spec: TopicSpec::new(name, partitions, capacity), key, _record: PhantomData }
    }
    pub fn name(&self) -> &'static str {
        self.spec.name
    }
    /// The record's key.
    pub fn key(&self, value: &T) -> u64 {
        (self.key)(value)
    }
    /// The partition the record goes to.
    pub fn partition_of(&self, value: &T) -> Partition {
        partition_for(self.key(value), self.spec.partitions())
    }
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Topic<T> {}

/// A record to produce, to a partition Herald chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: &'static str,
    pub partition: Partition,
    /// The record's key (kept with it; Herald partitions by it, see [`partition_for`]).
    pub key: u64,
    pub headers: Headers,
    pub value: Vec<u8>,
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub partition: Partition,
    pub offset: Offset,
    pub key: u64,
    pub headers: Headers,
    pub value: Vec<u8>,
}

/// The partition Herald gives a key: a stable hash, so keys spread even when they are dense
/// (tenant 1, 2, 3 ...) and the mapping never depends on a backend's partitioner.
pub fn partition_for(key: u64, partitions: u32) -> Partition {
    let mixed = xxhash_rust::xxh3::xxh3_64(&key.to_le_bytes());
    (mixed % u64::from(partitions.max(1))) as Partition
}

/// Topic storage with Fluvio's semantics (see the module docs).
#[async_trait]
pub trait TopicBackend: Send + Sync {
    fn spec(&self, topic: &str) -> Result<TopicSpec>;

    /// Appends records (possibly to several topics and partitions); durable when it returns;
    /// never waits for room. Returns each record's offset, in order.
    async fn produce(&self, records: Vec<ProducerRecord>) -> Result<Vec<Offset>>;

    /// Up to `max_records` records of a partition from `from` on (records below
    /// [`TopicBackend::start_offset`] are gone), waiting up to `max_wait` for the first one.
    /// Offsets come back contiguous and ascending.
    async fn fetch(
        &self,
        topic: &str,
        partition: Partition,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumerRecord>>;

    /// The group's committed next offset on a partition; `None` if it never committed there.
    /// Reading never registers a group.
    async fn committed(&self, topic: &str, group: &str, partition: Partition) -> Result<Option<Offset>>;

    /// Records that the group has processed everything before `next`; durable when it returns.
    async fn commit(&self, topic: &str, group: &str, partition: Partition, next: Offset) -> Result<()>;

    /// The offset the next produced record will get.
    async fn end_offset(&self, topic: &str, partition: Partition) -> Result<Offset>;

    /// The oldest offset still stored (retention may have dropped what is below it).
    async fn start_offset(&self, topic: &str, partition: Partition) -> Result<Offset>;

    /// Whether a fetch may jump to any offset at no more cost than reading on (the embedded
    /// segments: yes; a Fluvio stream is re-opened). The runner reads ahead only then.
    fn reads_anywhere(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_count_is_set_once() {
        assert!(configure_partitions(0).is_err());
        assert!(configure_partitions(2_000).is_err());
        // The dataflow's count is the default once read (this process never configures it).
        let spec = TopicSpec::new("t", CONFIGURED, None);
        assert_eq!(spec.partitions(), DEFAULT_PARTITIONS);
        assert!(configure_partitions(DEFAULT_PARTITIONS).is_ok(), "the same count again is fine");
        assert!(configure_partitions(16).is_err(), "no switching once topics are in use");
        assert_eq!(TopicSpec::new("t", 3, None).partitions(), 3, "a fixed count stays");
    }

    #[test]
    fn dense_keys_spread_over_partitions() {
        let mut counts = [0u32; 8];
        for tenant in 1..=800u64 {
            counts[partition_for(tenant, 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (70..=130).contains(c)), "{counts:?}");
        assert_eq!(partition_for(42, 8), partition_for(42, 8));
        assert_eq!(partition_for(42, 1), 0);
    }
}
