//! The `Stage` trait: one required method, `process(batch, out)`, and lifecycle hooks the
//! runner calls; the `Emitter` stages produce through.
//!
//! A stage never spawns tasks, sleeps or produces behind the runner's back. Work that must
//! wait — a retry not yet due, a paced call slot, a quota window, a paused campaign — returns
//! [`Step::Wait`], and the runner holds the rest of the batch (in memory briefly, then durably
//! in its held store) while every other lane goes on.

use crate::topic::{partition_for, Offset, Partition, ProducerRecord, Topic, TopicBackend};
use crate::Result;
use schemas::envelope::Headers;
use schemas::{codec, CampaignId, TenantId};
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The header carrying a record's due time (ms since the epoch): the runner does not hand the
/// record to its stage before then.
pub const DUE_HEADER: &str = "herald-due";

/// What the runner should do with a batch whose processing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Transient (storage hiccup): retry the same batch after this delay, a bounded number of
    /// times (then it is split up and dead-lettered).
    RetryAfter(Duration),
    /// A backend (topics, store, shared state) is unreachable: the lane pauses and retries
    /// without bound (backoff up to 5 s). An outage never fails or dead-letters a record.
    Outage(Duration),
    /// Retrying cannot help: dead-letter the batch with the reason.
    Permanent,
    /// This worker no longer owns the partition (its lease was taken over): stop consuming it
    /// and leave the batch unfinished and uncommitted for the new owner.
    Abandon,
}

/// A stage failure with the hint the runner acts on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    pub hint: RetryHint,
    pub message: String,
}

impl StageError {
    pub fn retry(after: Duration, message: impl Into<String>) -> Self {
        Self { hint: RetryHint::RetryAfter(after), message: message.into() }
    }
    pub fn outage(after: Duration, message: impl Into<String>) -> Self {
        Self { hint: RetryHint::Outage(after), message: message.into() }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { hint: RetryHint::Permanent, message: message.into() }
    }
    pub fn abandon(message: impl Into<String>) -> Self {
        Self { hint: RetryHint::Abandon, message: message.into() }
    }
}

impl From<crate::Error> for StageError {
    fn from(e: crate::Error) -> Self {
        if e.is_transient() {
            StageError::outage(Duration::from_millis(200), e.to_string())
        } else {
            StageError::permanent(e.to_string())
        }
    }
}

/// A lane of a partition: records of one lane are processed in order, one step at a time;
/// lanes run concurrently, and a lane that waits never holds up another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane(pub u64);

impl Lane {
    /// The lane of a tenant's campaign (the usual lane: one campaign waiting — paused, paced,
    /// out of quota — never holds up another campaign or tenant).
    pub fn campaign(tenant: TenantId, campaign: CampaignId) -> Lane {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&tenant.0.to_le_bytes());
        bytes[8..].copy_from_slice(&campaign.0.to_le_bytes());
        Lane(xxhash_rust::xxh3::xxh3_64(&bytes))
    }
}

/// A decoded input record with where it came from.
#[derive(Debug, Clone)]
pub struct Input<T> {
    pub partition: Partition,
    /// Its offset in the topic (None: the record came back from the runner's held store).
    pub offset: Option<Offset>,
    pub headers: Headers,
    pub value: T,
    /// Lanes of this partition with work in memory or held when the step started: a hint for
    /// stages that size their steps so the lanes take turns evenly (chunk), never a count
    /// anything depends on for correctness.
    pub lanes: usize,
    /// The lease this worker holds the partition by (distributed workers): writes that must
    /// not happen after a takeover are fenced by it. `None` when one process owns the topics.
    pub lease: Option<std::sync::Arc<PartitionLease>>,
}

/// A partition lease: its name in the shared state and the token this worker holds it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLease {
    pub name: String,
    pub token: u64,
}

/// What a step did with its batch.
#[derive(Debug)]
pub enum Step<T> {
    /// Every input is done.
    Done,
    /// Inputs before `from` are done; input `from` (replaced by `replacement` when given: the
    /// part still to do) and the inputs after it wait until `until_ms`.
    Wait { from: usize, replacement: Option<T>, until_ms: u64 },
}

/// Collects what a stage emits; the runner produces it before the input counts as done.
/// A stage may [`Emitter::flush`] early (e.g. deliver, to publish outcomes as calls finish).
pub struct Emitter {
    backend: Arc<dyn TopicBackend>,
    room: Arc<crate::room::Room>,
    pending: Vec<ProducerRecord>,
    /// Headers propagated to every emitted record (trace context of the input batch).
    headers: Headers,
    emitted: u64,
    /// Produce into the express reserve of bounded partitions (`crate::room`).
    express: bool,
}

impl Emitter {
    pub fn new(backend: Arc<dyn TopicBackend>) -> Self {
        let room = crate::room::Room::new(backend.clone());
        Self::with_room(backend, room)
    }

    /// An emitter sharing a room tracker (the runner gives all its steps one).
    pub fn with_room(backend: Arc<dyn TopicBackend>, room: Arc<crate::room::Room>) -> Self {
        Self { backend, room, pending: Vec::new(), headers: Headers::default(), emitted: 0, express: false }
    }

    /// Headers (trace context) put on every record emitted from now on.
    pub fn set_headers(&mut self, headers: Headers) {
        self.headers = headers;
    }

    /// Whether this step may produce into bounded partitions' express reserve (the runner
    /// sets it for a lane's first steps; see `crate::room`).
    pub fn set_express(&mut self, express: bool) {
        self.express = express;
    }

    /// Whether this step is one of a lane's first (express) steps: stages may let it skip
    /// waits that only bound steady traffic (e.g. throttle's express reserve).
    pub fn is_express(&self) -> bool {
        self.express
    }

    /// Queues `value` for `topic`, keyed (and partitioned) as the topic keys its records.
    pub fn emit<T: Serialize>(&mut self, topic: &Topic<T>, value: &T) -> Result<()> {
        self.push(topic, value, self.headers.clone())
    }

    /// Queues `value` for `topic`, not to be processed before `due_ms`.
    pub fn emit_due<T: Serialize>(&mut self, topic: &Topic<T>, value: &T, due_ms: u64) -> Result<()> {
        let mut headers = self.headers.clone();
        headers.set(DUE_HEADER, due_ms.to_string());
        self.push(topic, value, headers)
    }

    fn push<T: Serialize>(&mut self, topic: &Topic<T>, value: &T, headers: Headers) -> Result<()> {
        let key = topic.key(value);
        self.pending.push(ProducerRecord {
            topic: topic.name(),
            partition: partition_for(key, topic.spec.partitions()),
            key,
            headers,
            value: codec::encode(value)?,
        });
        Ok(())
    }

    /// Produces everything queued so far, waiting first while a bounded target partition has
    /// no room (backpressure from its consumers' committed offsets); durable when it returns.
    pub async fn flush(&mut self) -> Result<Vec<Offset>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        for r in &self.pending {
            self.room.wait(r.topic, r.partition, self.express).await?;
        }
        let records = std::mem::take(&mut self.pending);
        self.emitted += records.len() as u64;
        self.backend.produce(records).await
    }

    /// Drops what was queued but not flushed (the batch will be processed again).
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Records produced through this emitter so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }
}

/// A stage of the dataflow. The runner owns batching, lanes, waiting, backpressure, commits,
/// retries and dead-lettering; a stage only turns a batch of inputs into emitted records and
/// side effects.
///
/// `process` may be called again with the same records after a crash or a retry (at-least-once),
/// so its effects must be idempotent — Herald's are, by deterministic message ids, send claims
/// and the monotonic reconcile state machine.
pub trait Stage: Send + Sync + 'static {
    type In: DeserializeOwned + Serialize + Send + Sync + 'static;

    /// The stage's name (also its consumer group; declared in [`crate::topics::STAGES`]).
    fn name(&self) -> &'static str;

    /// The lane of a record (default: one lane per partition, records strictly in order).
    fn lane(&self, _input: &Self::In) -> Lane {
        Lane(0)
    }

    /// The lane of an encoded record when it can be read without decoding the whole record
    /// (the runner's read-ahead scans records for their lanes); `None`: decode, then `lane`.
    fn lane_of_encoded(&self, _bytes: &[u8]) -> Option<Lane> {
        None
    }

    /// Processes a batch of one lane's records, in order.
    fn process(
        &self,
        batch: Vec<Input<Self::In>>,
        out: &mut Emitter,
    ) -> impl Future<Output = std::result::Result<Step<Self::In>, StageError>> + Send;

    /// Once, before any partition is consumed; what it emits is produced before consuming
    /// starts (e.g. chunk resuming the campaigns a previous run left mid-way).
    fn on_start(&self, _out: &mut Emitter) -> impl Future<Output = std::result::Result<(), StageError>> + Send {
        async { Ok(()) }
    }

    /// This runner now consumes `partition` (at start, or when a worker takes it over).
    fn on_assigned(&self, _partition: Partition) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// This runner stopped consuming `partition`.
    fn on_revoked(&self, _partition: Partition) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Every runner tick (`RunnerConfig::tick`), for work driven by time rather than records
    /// (e.g. throttle returning run-ahead budget as deliver commits).
    fn on_tick(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Once, after the last partition stopped.
    fn on_stop(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The stage's own metrics, published by the runner about once a second
    /// ([`crate::board`]); a snapshot, never a handle into the stage.
    fn metrics(&self) -> Vec<crate::board::Sample> {
        Vec::new()
    }
}

/// Converts lower-level errors into a retryable stage error.
pub fn transient<E: std::fmt::Display>(e: E) -> StageError {
    StageError::retry(Duration::from_millis(200), e.to_string())
}
