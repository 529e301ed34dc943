//! The dataflow's topics and stages, declared once. Use these constants; never spell a topic
//! or consumer group name at a use site.
//!
//! Capacities bound how far a producer may run ahead of the slowest consumer group, in records
//! (each record is a batch of up to ~1,000 messages), so memory stays bounded by configuration
//! no matter how large the audience.

use crate::topic::{Topic, TopicSpec};
use schemas::*;

/// Partitions per topic in the embedded deployment.
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
/// `herald-error` header saying why. No consumer: kept for inspection.
pub const DEAD_RECORDS: Topic<Vec<u8>> = Topic::new("pipeline.dead", 1, None);

/// A stage of the dataflow: its name (also its consumer group) and the topic it consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSpec {
    pub name: &'static str,
    pub input: TopicSpec,
}

pub const CHUNK: StageSpec = StageSpec { name: "chunk", input: SENDS.spec };
pub const RENDER: StageSpec = StageSpec { name: "render", input: CHUNKS.spec };
pub const THROTTLE: StageSpec = StageSpec { name: "throttle", input: RENDERED.spec };
pub const DELIVER: StageSpec = StageSpec { name: "deliver", input: READY.spec };
/// Deliver again: retries and DLQ redrives (`delivery.retry`).
pub const REDELIVER: StageSpec = StageSpec { name: "redeliver", input: RETRY.spec };
pub const RECONCILE: StageSpec = StageSpec { name: "reconcile", input: OUTCOMES.spec };
pub const RECONCILE_RECEIPTS: StageSpec = StageSpec { name: "reconcile-receipts", input: RECEIPTS.spec };
pub const RECONCILE_DLQ: StageSpec = StageSpec { name: "reconcile-dlq", input: DLQ.spec };

/// Every stage, in flow order.
pub const STAGES: [StageSpec; 8] =
    [CHUNK, RENDER, THROTTLE, DELIVER, REDELIVER, RECONCILE, RECONCILE_RECEIPTS, RECONCILE_DLQ];

/// Every topic, for backends that create them up front.
pub fn all() -> Vec<TopicSpec> {
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

/// The consumer groups reading `topic` (their committed offsets bound its producers and its
/// retention).
pub fn consumers_of(topic: &str) -> impl Iterator<Item = &'static str> + '_ {
    STAGES.iter().filter(move |s| s.input.name == topic).map(|s| s.name)
}

/// The stage called `name`.
pub fn stage(name: &str) -> Option<StageSpec> {
    STAGES.iter().copied().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_reads_a_declared_topic_and_names_are_unique() {
        let topics = all();
        for s in STAGES {
            assert!(topics.contains(&s.input), "{}", s.name);
            assert_eq!(stage(s.name), Some(s));
        }
        let mut names: Vec<_> = STAGES.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STAGES.len());
        assert_eq!(consumers_of(READY.name()).collect::<Vec<_>>(), vec!["deliver"]);
        assert_eq!(consumers_of(DEAD_RECORDS.name()).count(), 0);
    }
}
