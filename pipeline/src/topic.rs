//! Typed topics and the byte-level topic backend contract (Fluvio's semantics).

use crate::Result;
use async_trait::async_trait;
use schemas::envelope::Headers;
use std::marker::PhantomData;
use std::time::Duration;

pub type Partition = u32;
pub type Offset = u64;

/// How a topic is laid out: its name, partition count and how many unconsumed records a
/// partition may hold before producers block (None: unbounded, for feedback loops such as
/// `delivery.retry` where blocking could deadlock the consumer that produces to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: u32,
    pub capacity: Option<u64>,
}

/// A topic carrying records of type `T`. Constants live in [`crate::topics`].
pub struct Topic<T> {
    pub spec: TopicSpec,
    _record: PhantomData<fn() -> T>,
}

impl<T> Topic<T> {
    pub const fn new(name: &'static str, partitions: u32, capacity: Option<u64>) -> Self {
        Self { spec: TopicSpec { name, partitions, capacity }, _record: PhantomData }
    }
    pub fn name(&self) -> &'static str {
        self.spec.name
    }
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Topic<T> {}

/// A record to produce. `key` picks the partition (Herald keys by tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: &'static str,
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

/// The partition a key maps to.
pub fn partition_for(key: u64, partitions: u32) -> Partition {
    (key % u64::from(partitions.max(1))) as Partition
}

/// Topic storage with Fluvio's semantics: partitions by key, offsets, consumer groups with
/// committed offsets, headers, at-least-once.
#[async_trait]
pub trait TopicBackend: Send + Sync {
    fn spec(&self, topic: &str) -> Result<TopicSpec>;

    /// Appends records (possibly to several topics); durable when it returns. Blocks while a
    /// bounded partition is full. Returns `(partition, offset)` per record, in order.
    async fn produce(&self, records: Vec<ProducerRecord>) -> Result<Vec<(Partition, Offset)>>;

    /// Up to `max_records` records from `from` on, waiting up to `max_wait` for the first one.
    async fn fetch(
        &self,
        topic: &str,
        partition: Partition,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumerRecord>>;

    /// The group's next offset to read (0 for a new group, which is registered by this call).
    async fn committed(&self, topic: &str, group: &str, partition: Partition) -> Result<Offset>;

    /// Records that the group has processed everything before `next`; durable when it returns.
    async fn commit(&self, topic: &str, group: &str, partition: Partition, next: Offset) -> Result<()>;

    /// The offset the next produced record will get.
    async fn end_offset(&self, topic: &str, partition: Partition) -> Result<Offset>;
}
