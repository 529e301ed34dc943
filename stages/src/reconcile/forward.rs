//! Keeps the single-writer contract when a record arrives on the wrong reconcile partition.
//!
//! Reconcile's three inputs are keyed by campaign ([`pipeline::topics::campaign_partition`]),
//! and producers emit one campaign per record, so a step's items normally all belong to its
//! partition. Two cases do not: a receipt without callback data only learns its campaign when
//! reconcile resolves its provider id, and a producer may batch several campaigns together.
//! An item of another partition is never applied here — that would make two writers of one
//! campaign's counters — but forwarded, regrouped by campaign, to the same topic, where the
//! owner of its partition applies it. Forwarding is at-least-once like every emit: a step that
//! fails after forwarding forwards again, and applying is idempotent.
//!
//! It is not: the resolution of provider ids (see `Reconciler::resolve`).

use pipeline::{topics, Emitter, Partition, Topic};
use schemas::*;

/// A reconcile input: one tenant's items, each of some campaign.
pub(super) trait Batch: Sized + serde::Serialize + 'static {
    type Item;
    fn topic() -> &'static Topic<Self>;
    fn split(self) -> (TenantId, Vec<Self::Item>);
    fn join(tenant: TenantId, items: Vec<Self::Item>) -> Self;
    /// The item's campaign; `None` while unknown (it stays, to be resolved here).
    fn campaign(item: &Self::Item) -> Option<CampaignId>;
}

/// The part of `batch` that belongs to `partition`; the rest is queued on `out`, one record
/// per campaign. Returns how many items were forwarded too.
pub(super) fn keep_own<B: Batch>(batch: B, partition: Partition, out: &mut Emitter) -> pipeline::Result<(B, u64)> {
    let (tenant, items) = batch.split();
    let mut own = Vec::with_capacity(items.len());
    let mut elsewhere: Vec<(CampaignId, Vec<B::Item>)> = Vec::new();
    for item in items {
        match B::campaign(&item) {
            Some(c) if topics::campaign_partition(tenant, c) != partition => {
                match elsewhere.iter_mut().find(|(k, _)| *k == c) {
                    Some((_, group)) => group.push(item),
                    None => elsewhere.push((c, vec![item])),
                }
            }
            _ => own.push(item),
        }
    }
    let mut forwarded = 0;
    for (_, items) in elsewhere {
        forwarded += items.len() as u64;
        out.emit(B::topic(), &B::join(tenant, items))?;
    }
    Ok((B::join(tenant, own), forwarded))
}

impl Batch for OutcomeBatch {
    type Item = OutcomeEvent;
    fn topic() -> &'static Topic<Self> {
        &topics::OUTCOMES
    }
    fn split(self) -> (TenantId, Vec<OutcomeEvent>) {
        (self.tenant, self.events)
    }
    fn join(tenant: TenantId, events: Vec<OutcomeEvent>) -> Self {
        OutcomeBatch { tenant, events }
    }
    fn campaign(item: &OutcomeEvent) -> Option<CampaignId> {
        Some(match item {
            OutcomeEvent::Message(o) => o.key.campaign,
            OutcomeEvent::Sealed { campaign, .. } => *campaign,
        })
    }
}

impl Batch for ReceiptBatch {
    type Item = Receipt;
    fn topic() -> &'static Topic<Self> {
        &topics::RECEIPTS
    }
    fn split(self) -> (TenantId, Vec<Receipt>) {
        (self.tenant, self.receipts)
    }
    fn join(tenant: TenantId, receipts: Vec<Receipt>) -> Self {
        ReceiptBatch { tenant, receipts }
    }
    fn campaign(item: &Receipt) -> Option<CampaignId> {
        item.key.map(|k| k.campaign)
    }
}

impl Batch for DeadLetterBatch {
    type Item = DeadLetter;
    fn topic() -> &'static Topic<Self> {
        &topics::DLQ
    }
    fn split(self) -> (TenantId, Vec<DeadLetter>) {
        (self.tenant, self.letters)
    }
    fn join(tenant: TenantId, letters: Vec<DeadLetter>) -> Self {
        DeadLetterBatch { tenant, letters }
    }
    fn campaign(item: &DeadLetter) -> Option<CampaignId> {
        Some(item.message.key.campaign)
    }
}
