//! chunk: campaign.sends → campaign.chunks (+ `Sealed` on delivery.outcomes).
//!
//! Reads a campaign's audience in id order (range scans over recipient buckets) and emits
//! chunks of `chunk_size` recipients, `chunks_per_step` per step: a step ends by sending the
//! campaign's next `SendRequest` (`from_seq` = the next chunk) to its own input, so a
//! 10M-recipient campaign is a stream of small steps that takes turns with every other campaign
//! (one lane per campaign) instead of one task that holds a partition. When the audience is
//! exhausted it emits `Sealed { total }`, which tells reconcile how many messages the campaign
//! has.
//!
//! Crash safety: chunks and the continuation are produced first, then the checkpoint (next
//! recipient, emitted count, next chunk) is written. A request whose `from_seq` is behind the
//! checkpoint is a stale duplicate and does nothing, so a replay re-emits at most one step's
//! chunks (harmless: message ids are deterministic and every later step is idempotent) and never
//! forks the stream. A paused campaign is not chunked further (the step waits); a cancelled
//! one is chunked to the end so every recipient gets a `cancelled` outcome. Producing waits for
//! room on the bounded chunks topic, so chunking runs only as far ahead as the topics allow.
//!
//! Fair slices: a step emits `step_budget / waiting campaigns of the partition` recipients (at
//! least `min_slice`, at most `chunk_size x chunks_per_step`; the runner says how many lanes
//! wait); a new campaign starts at the smallest slice and ramps up. With a campaign or two per partition
//! a step is 4 full chunks; with a thousand tenants each step is a small slice, so every
//! campaign's messages are spread over the whole run instead of whole campaigns passing the
//! bounded topics in waves. Slice sizes change nothing for correctness: message ids come from
//! (campaign, recipient) and the checkpoint records the next recipient.
//!
//! It is not: a scheduler (campaigns arrive when sent) and it never renders.

use crate::control::CampaignControl;
use pipeline::{topics, Emitter, Input, Lane, Stage, StageError, Step};
use schemas::*;
use std::result::Result;
use std::sync::Arc;
use std::time::Duration;
use storage::{Audiences, CampaignStatus, Catalog, Checkpoints};

#[derive(Debug, Clone)]
pub struct ChunkConfig {
    /// Recipients per chunk.
    pub chunk_size: usize,
    /// Chunks per step at most (then the campaign yields to the others of its partition).
    pub chunks_per_step: usize,
    /// Recipients one round over a partition's waiting campaigns emits (divided among them).
    pub step_budget: usize,
    /// The smallest slice a step emits, however many campaigns are active.
    pub min_slice: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self { chunk_size: 1_000, chunks_per_step: 4, step_budget: 4_000, min_slice: 50 }
    }
}

impl ChunkConfig {
    /// Recipients the step of a campaign starting at chunk `from_seq` emits while `lanes`
    /// campaigns of its partition take turns. Steps start at the smallest slice and at most
    /// double per chunk already emitted (campaigns started together are not all counted at
    /// first); then the partition's budget is shared among its waiting lanes.
    fn step_recipients(&self, from_seq: u64, lanes: usize) -> usize {
        let most = self.chunk_size.max(1) * self.chunks_per_step.max(1);
        let least = self.min_slice.clamp(1, most);
        let ramp = least.saturating_mul(1 << from_seq.min(20));
        (self.step_budget / lanes.max(1)).min(ramp).clamp(least, most)
    }
}

/// How often a paused campaign is looked at again.
const PAUSE_RECHECK: Duration = Duration::from_secs(1);

/// The chunk stage.
pub struct Chunk {
    catalog: Arc<dyn Catalog>,
    audiences: Arc<dyn Audiences>,
    checkpoints: Arc<dyn Checkpoints>,
    control: Arc<CampaignControl>,
    config: ChunkConfig,
}

impl Chunk {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        audiences: Arc<dyn Audiences>,
        checkpoints: Arc<dyn Checkpoints>,
        control: Arc<CampaignControl>,
        config: ChunkConfig,
    ) -> Self {
        Self { catalog, audiences, checkpoints, control, config }
    }

    /// One step of a campaign; `Some(until)` when it is paused.
    async fn step(&self, request: &SendRequest, lanes: usize, out: &mut Emitter) -> crate::Result<Option<u64>> {
        let (tenant, campaign_id) = (request.tenant, request.campaign);
        let Some(campaign) = self.catalog.get_campaign(tenant, campaign_id).await? else {
            tracing::warn!(%tenant, campaign = %campaign_id, "send for an unknown campaign ignored");
            return Ok(None);
        };
        let mut checkpoint = self.checkpoints.get_checkpoint(tenant, campaign_id).await?;
        if checkpoint.done || checkpoint.next_seq != request.from_seq {
            return Ok(None); // finished, or a stale duplicate of an earlier step
        }
        if self.control.status(tenant, campaign_id).await? == CampaignStatus::Paused {
            return Ok(Some(now_ms() + PAUSE_RECHECK.as_millis() as u64));
        }
        let mut left = self.config.step_recipients(request.from_seq, lanes);
        while left > 0 {
            let size = left.min(self.config.chunk_size.max(1));
            left -= size;
            let recipients = self
                .audiences
                .read_recipients(tenant, campaign.audience, RecipientId(checkpoint.next_recipient), size)
                .await?;
            let Some(last) = recipients.last() else {
                let sealed = OutcomeEvent::Sealed { tenant, campaign: campaign_id, total: checkpoint.emitted };
                out.emit(&topics::OUTCOMES, &OutcomeBatch { tenant, events: vec![sealed] })?;
                checkpoint.done = true;
                break;
            };
            checkpoint.next_recipient = last.id.0 + 1;
            checkpoint.emitted += recipients.len() as u64;
            let chunk = schemas::Chunk {
                tenant,
                campaign: campaign_id,
                seq: checkpoint.next_seq,
                trigger_ms: request.requested_at_ms,
                recipients,
            };
            checkpoint.next_seq += 1;
            out.emit(&topics::CHUNKS, &chunk)?;
        }
        if !checkpoint.done {
            let next = SendRequest { from_seq: checkpoint.next_seq, ..request.clone() };
            out.emit(&topics::SENDS, &next)?;
        }
        // Produced first, then the checkpoint (see the module docs).
        out.flush().await?;
        self.checkpoints.put_checkpoint(tenant, campaign_id, checkpoint).await?;
        Ok(None)
    }
}

impl Stage for Chunk {
    type In = SendRequest;

    fn name(&self) -> &'static str {
        topics::CHUNK.name
    }

    fn lane(&self, request: &SendRequest) -> Lane {
        Lane::campaign(request.tenant, request.campaign)
    }

    fn lane_of_encoded(&self, bytes: &[u8]) -> Option<Lane> {
        schemas::campaign_of_encoded(bytes).map(|(tenant, campaign)| Lane::campaign(tenant, campaign))
    }

    /// Resumes every started campaign whose chunking had not finished: its request from the
    /// checkpoint (if the previous run's continuation is still in the topic, one of the two is
    /// a stale duplicate and does nothing).
    async fn on_start(&self, out: &mut Emitter) -> Result<(), StageError> {
        for tenant in self.catalog.list_tenants().await.map_err(crate::Error::from)? {
            if !tenant.is_active() {
                continue;
            }
            for campaign in self.catalog.list_campaigns(tenant.id).await.map_err(crate::Error::from)? {
                let started = matches!(
                    campaign.status,
                    CampaignStatus::Running | CampaignStatus::Paused | CampaignStatus::Cancelled
                );
                let checkpoint =
                    self.checkpoints.get_checkpoint(tenant.id, campaign.id).await.map_err(crate::Error::from)?;
                if started && !checkpoint.done {
                    let request = SendRequest {
                        tenant: tenant.id,
                        campaign: campaign.id,
                        requested_at_ms: campaign.triggered_ms.unwrap_or_else(now_ms),
                        from_seq: checkpoint.next_seq,
                    };
                    out.emit(&topics::SENDS, &request).map_err(crate::Error::from)?;
                }
            }
        }
        Ok(())
    }

    async fn process(
        &self,
        batch: Vec<Input<SendRequest>>,
        out: &mut Emitter,
    ) -> Result<Step<SendRequest>, StageError> {
        for (i, input) in batch.iter().enumerate() {
            if let Some(until_ms) = self.step(&input.value, input.lanes, out).await? {
                return Ok(Step::Wait { from: i, replacement: None, until_ms });
            }
        }
        Ok(Step::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_shrink_with_active_campaigns_within_bounds() {
        let config = ChunkConfig::default();
        assert_eq!(config.step_recipients(10, 1), 4_000, "one campaign: full chunks");
        assert_eq!(config.step_recipients(10, 2), 2_000);
        assert_eq!(config.step_recipients(10, 125), 50, "many campaigns: the smallest slice");
        let ramp: Vec<usize> = (0..8).map(|seq| config.step_recipients(seq, 1)).collect();
        assert_eq!(ramp, [50, 100, 200, 400, 800, 1_600, 3_200, 4_000], "a new campaign ramps up");
        let tiny = ChunkConfig { chunk_size: 10, chunks_per_step: 2, ..ChunkConfig::default() };
        assert_eq!(tiny.step_recipients(10, 1_000), 20, "never more than chunk_size x chunks_per_step");
    }
}
