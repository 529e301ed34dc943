//! The dataflow's topics and stages, declared once. Use these constants; never spell a topic
//! or consumer group name at a use site.
//!
//! Capacities bound how far a producer may run ahead of the slowest consumer group, in records
//! (each record is a batch of up to ~1,000 messages), so memory stays bounded by configuration
//! no matter how large the audience.

use crate::topic::{Topic, TopicSpec};
use schemas::*;

/// The dataflow topics' partition count: [`crate::topic::DEFAULT_PARTITIONS`] (8) unless the
/// distributed deployment configures another ([`crate::topic::configure_partitions`]).
const PARTITIONS: u32 = crate::topic::CONFIGURED;

// Every topic is keyed by what its consumer needs on one partition (one owner at a time):
// - `campaign.sends` by campaign: chunk walks a campaign's audience from one cursor;
// - `campaign.chunks` by (campaign, chunk): render has no state, so one campaign's chunks
//   spread over every partition and every render worker;
// - `messages.rendered` by tenant: throttle's tenant rate bucket, in-flight cap and fair gate
//   are one tenant's, kept exact by one owner without a round trip per message;
// - `messages.ready` and `delivery.retry` by route (tenant and channel: the senders deliver
//   paces): one deliver owner per route keeps its AIMD view and token blocks local; the
//   buckets themselves are shared, so a handover never over-sends;
// - `delivery.outcomes`, `receipts.inbound` and `delivery.dlq` by campaign, with the same
//   partition count: one reconcile owner per campaign writes its rows and counters
//   (`campaign_partition`; reconcile forwards anything that arrives elsewhere).

pub const SENDS: Topic<SendRequest> =
    Topic::new("campaign.sends", PARTITIONS, None, |r| campaign_key(r.tenant, r.campaign));
pub const CHUNKS: Topic<Chunk> =
    Topic::new("campaign.chunks", PARTITIONS, Some(16), |c| chunk_key(c.tenant, c.campaign, c.seq));
pub const RENDERED: Topic<MessageBatch> =
    Topic::new("messages.rendered", PARTITIONS, Some(16), |b| tenant_key(b.tenant));
pub const READY: Topic<MessageBatch> =
    Topic::new("messages.ready", PARTITIONS, Some(64), |b| batch_route_key(b.tenant, &b.messages));
pub const RETRY: Topic<RetryBatch> =
    Topic::new("delivery.retry", PARTITIONS, None, |b| batch_route_key(b.tenant, &b.messages));
pub const OUTCOMES: Topic<OutcomeBatch> = Topic::new("delivery.outcomes", PARTITIONS, Some(256), |b| {
    let campaign = b.events.first().map(|e| match e {
        OutcomeEvent::Message(o) => o.key.campaign,
        OutcomeEvent::Sealed { campaign, .. } => *campaign,
    });
    campaign.map_or(tenant_key(b.tenant), |c| campaign_key(b.tenant, c))
});
pub const DLQ: Topic<DeadLetterBatch> = Topic::new("delivery.dlq", PARTITIONS, None, |b| {
    b.letters.first().map_or(tenant_key(b.tenant), |l| campaign_key(b.tenant, l.message.key.campaign))
});
/// Receipts without callback data have no campaign until reconcile resolves their provider
/// ids; it forwards them to their campaign's partition then.
pub const RECEIPTS: Topic<ReceiptBatch> = Topic::new("receipts.inbound", PARTITIONS, None, |b| {
    b.receipts.iter().find_map(|r| r.key).map_or(tenant_key(b.tenant), |k| campaign_key(b.tenant, k.campaign))
});
/// Records a stage could not process (undecodable or failing permanently), raw, with a
/// `herald-error` header saying why. No consumer: kept for inspection.
pub const DEAD_RECORDS: Topic<Vec<u8>> = Topic::new("pipeline.dead", 1, None, |_| 0);

const _: () = assert!(
    OUTCOMES.spec.same_partitions(&RECEIPTS.spec) && OUTCOMES.spec.same_partitions(&DLQ.spec),
    "reconcile owns partition p of its three inputs together"
);

fn mix(parts: &[u64]) -> u64 {
    let mut bytes = [0u8; 32];
    for (i, p) in parts.iter().enumerate().take(4) {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&p.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes[..parts.len().min(4) * 8])
}

/// The key of everything one tenant owns as a whole.
pub fn tenant_key(tenant: TenantId) -> u64 {
    tenant.0
}

/// The key of a campaign's records (sends, outcomes, receipts, dead letters).
pub fn campaign_key(tenant: TenantId, campaign: CampaignId) -> u64 {
    mix(&[tenant.0, campaign.0])
}

/// The key of one chunk of a campaign.
pub fn chunk_key(tenant: TenantId, campaign: CampaignId, seq: u64) -> u64 {
    mix(&[tenant.0, campaign.0, seq])
}

/// The key of a route: a tenant's senders for one channel.
pub fn route_key(tenant: TenantId, channel: Channel) -> u64 {
    let channel = match channel {
        Channel::Sms => 1,
        Channel::Email => 2,
        Channel::WhatsApp => 3,
    };
    mix(&[tenant.0, u64::MAX, channel])
}

fn batch_route_key(tenant: TenantId, messages: &[RenderedMessage]) -> u64 {
    messages.first().map_or(tenant_key(tenant), |m| route_key(tenant, m.content.channel()))
}

/// The reconcile partition of a campaign (of `delivery.outcomes`, `receipts.inbound` and
/// `delivery.dlq` alike): its rows and counters have one writer, the owner of this partition.
pub fn campaign_partition(tenant: TenantId, campaign: CampaignId) -> crate::topic::Partition {
    crate::topic::partition_for(campaign_key(tenant, campaign), OUTCOMES.spec.partitions())
}

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

    #[test]
    fn one_campaigns_chunks_spread_and_its_reconcile_inputs_meet() {
        let (tenant, campaign) = (TenantId(3), CampaignId(77));
        let partitions = CHUNKS.spec.partitions();
        let mut used = vec![0u32; partitions as usize];
        for seq in 0..100 * u64::from(partitions) {
            let chunk = Chunk { tenant, campaign, seq, trigger_ms: 0, recipients: Vec::new() };
            used[CHUNKS.partition_of(&chunk) as usize] += 1;
        }
        assert!(used.iter().all(|n| (60..=140).contains(n)), "{used:?}");

        let p = campaign_partition(tenant, campaign);
        let sealed = OutcomeBatch { tenant, events: vec![OutcomeEvent::Sealed { tenant, campaign, total: 1 }] };
        assert_eq!(OUTCOMES.partition_of(&sealed), p);
        let key = MessageKey {
            tenant,
            campaign,
            bucket: 0,
            id: MessageId::derive(tenant, campaign, RecipientId(1), Channel::Sms),
        };
        let receipt = Receipt {
            provider: "sms".into(),
            provider_message_id: "x".into(),
            key: Some(key),
            status: ReceiptStatus::Delivered,
            at_ms: 0,
            error: None,
        };
        assert_eq!(RECEIPTS.partition_of(&ReceiptBatch { tenant, receipts: vec![receipt] }), p);
        assert_eq!(SENDS.partition_of(&SendRequest { tenant, campaign, requested_at_ms: 0, from_seq: 0 }), p);
        // Distinct channels of one tenant are distinct routes.
        assert_ne!(route_key(tenant, Channel::Sms), route_key(tenant, Channel::WhatsApp));
    }
}
