//! The `Stage` trait: one required method, `process(batch, out)`.

use crate::topic::{Offset, Partition, ProducerRecord, Topic, TopicBackend};
use crate::Result;
use schemas::envelope::Headers;
use schemas::{codec, TenantId};
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What the runner should do with a batch whose processing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Transient (storage hiccup, dependency down): retry the same batch after this delay.
    RetryAfter(Duration),
    /// Retrying cannot help: dead-letter the batch with the reason.
    Permanent,
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
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { hint: RetryHint::Permanent, message: message.into() }
    }
}

/// A decoded input record with where it came from.
#[derive(Debug, Clone)]
pub struct Input<T> {
    pub partition: Partition,
    pub offset: Offset,
    pub headers: Headers,
    pub value: T,
}

/// Collects what a stage emits; the runner produces it before committing the input.
/// A stage may [`Emitter::flush`] early (e.g. deliver, to publish outcomes while it paces).
pub struct Emitter {
    backend: Arc<dyn TopicBackend>,
    pending: Vec<ProducerRecord>,
    /// Headers propagated to every emitted record (trace context of the input batch).
    headers: Headers,
    emitted: u64,
}

impl Emitter {
    pub fn new(backend: Arc<dyn TopicBackend>) -> Self {
        Self { backend, pending: Vec::new(), headers: Headers::default(), emitted: 0 }
    }

    /// Headers (trace context) put on every record emitted from now on.
    pub fn set_headers(&mut self, headers: Headers) {
        self.headers = headers;
    }

    /// Queues `value` for `topic`, partitioned by `tenant`.
    pub fn emit<T: Serialize>(&mut self, topic: &Topic<T>, tenant: TenantId, value: &T) -> Result<()> {
        self.pending.push(ProducerRecord {
            topic: topic.name(),
            key: tenant.0,
            headers: self.headers.clone(),
            value: codec::encode(value)?,
        });
        Ok(())
    }

    /// Produces everything queued so far (durable when it returns); returns where each record
    /// landed, in emit order.
    pub async fn flush(&mut self) -> Result<Vec<(Partition, Offset)>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let records = std::mem::take(&mut self.pending);
        self.emitted += records.len() as u64;
        self.backend.produce(records).await
    }

    /// Drops what was queued but not flushed (the batch will be processed again).
    pub(crate) fn discard(&mut self) {
        self.pending.clear();
    }

    /// Records produced through this emitter so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }
}

/// A stage of the dataflow. The runner owns batching, backpressure, commits, retries and
/// dead-lettering; a stage only turns a batch of inputs into emitted records and side effects.
///
/// `process` may be called again with the same records after a crash or a retry (at-least-once),
/// so its effects must be idempotent — Herald's are, by deterministic message ids, send claims
/// and the monotonic reconcile state machine.
pub trait Stage: Send + Sync + 'static {
    type In: DeserializeOwned + Send + 'static;

    /// The stage's name (also its consumer group).
    fn name(&self) -> &'static str;

    fn process(
        &self,
        batch: Vec<Input<Self::In>>,
        out: &mut Emitter,
    ) -> impl Future<Output = std::result::Result<(), StageError>> + Send;
}

/// Converts lower-level errors into a retryable stage error.
pub fn transient<E: std::fmt::Display>(e: E) -> StageError {
    StageError::retry(Duration::from_millis(200), e.to_string())
}
