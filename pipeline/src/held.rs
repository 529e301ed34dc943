//! The runner's held store: records a lane set aside because they wait long (a retry due in a
//! minute, a campaign out of quota until tomorrow, a paced batch that takes minutes) or because
//! the lane's in-memory queue is full. Holding them durably lets the committed offset move past
//! them and keeps memory bounded by configuration, while the lane keeps their order.
//!
//! Keyed `(group, partition, lane, seq)`: a CQL table partitioned by `(group, partition,
//! lane)` or a Redis sorted set per lane can keep this contract as well as the embedded store.
//! Whoever owns the partition (one runner at a time) is the only writer of its lanes.

use crate::stage::Lane;
use crate::topic::Partition;
use crate::Result;
use async_trait::async_trait;
use schemas::envelope::Headers;
use serde::{Deserialize, Serialize};

/// A held record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRecord {
    /// Position in its lane (ascending).
    pub seq: u64,
    /// Not to be processed before this time (ms since the epoch).
    pub due_ms: u64,
    pub key: u64,
    pub headers: Headers,
    pub value: Vec<u8>,
}

/// A lane with held records, as found when a partition is assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLane {
    pub lane: Lane,
    pub count: u64,
    /// The last seq in the lane (new records go after it).
    pub last_seq: u64,
    /// When its first record is due.
    pub first_due_ms: u64,
}

#[async_trait]
pub trait HeldRecords: Send + Sync {
    /// Appends records to a lane, in order (their `seq` ascending, above the lane's last);
    /// durable when it returns.
    async fn hold(&self, group: &str, partition: Partition, lane: Lane, records: Vec<HeldRecord>) -> Result<()>;

    /// Replaces a held record (same `seq`): the part of it still to do, and when.
    async fn update(&self, group: &str, partition: Partition, lane: Lane, record: HeldRecord) -> Result<()>;

    /// The first `limit` records of a lane, in order.
    async fn peek(&self, group: &str, partition: Partition, lane: Lane, limit: usize) -> Result<Vec<HeldRecord>>;

    /// Removes the lane's records with `seq ≤ through`.
    async fn release(&self, group: &str, partition: Partition, lane: Lane, through: u64) -> Result<()>;

    /// Every lane of the partition with held records.
    async fn lanes(&self, group: &str, partition: Partition) -> Result<Vec<HeldLane>>;
}
