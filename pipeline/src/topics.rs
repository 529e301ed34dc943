//! The dataflow's topics. Use these constants; never spell a topic name at a use site.
//!
//! Capacities bound how far a producer may run ahead of the slowest consumer group, in records
//! (each record is a batch of up to ~1,000 messages), so disk and memory stay bounded by
//! configuration no matter how large the audience.

use crate::topic::Topic;
use schemas::*;

/// Partitions per topic in the embedded deployment (keyed by tenant).
pub const PARTITIONS: u32 = 8;

pub const SENDS: Topic<SendRequest> = Topic::new("campaign.sends", PARTITIONS, None);
pub const CHUNKS: Topic<Chunk> = Topic::new("campaign.chunks", PARTITIONS, Some(16));
pub const RENDERED: Topic<MessageBatch> = Topic::new("messages.rendered", PARTITIONS, Some(16));
pub const READY: Topic<MessageBatch> = Topic::new("messages.ready", PARTITIONS, Some(64));
pub const RETRY: Topic<RetryBatch> = Topic::new("delivery.retry", PARTITIONS, None);
pub const OUTCOMES: Topic<OutcomeBatch> = Topic::new("delivery.outcomes", PARTITIONS, Some(256));
pub const DLQ: Topic<DeadLetterBatch> = Topic::new("delivery.dlq", PARTITIONS, None);
pub const RECEIPTS: Topic<ReceiptBatch> = Topic::new("receipts.inbound", PARTITIONS, None);
/// Records a stage could not process (undecodable or failing permanently), raw, with a
/// `herald-error` header saying why.
pub const DEAD_RECORDS: Topic<Vec<u8>> = Topic::new("pipeline.dead", 1, None);

/// Every topic, for backends that create them up front.
pub fn all() -> Vec<crate::TopicSpec> {
    vec![
        SENDS.spec,
        CHUNKS.spec,
        RENDERED.spec,
        READY.spec,
        RETRY.spec,
        OUTCOMES.spec,
        DLQ.spec,
        RECEIPTS.spec,
        DEAD_RECORDS.spec,
    ]
}
