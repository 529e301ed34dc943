//! chunk: campaign.sends → campaign.chunks (+ `Sealed` on delivery.outcomes).
//!
//! Reads a campaign's audience in id order (range scans over recipient buckets) and emits
//! chunks of `chunk_size` recipients. After each chunk is produced, the checkpoint
//! (next recipient, emitted count, next sequence) is written durably; after a crash the
//! campaign resumes from it, re-emitting at most the one chunk whose checkpoint was not yet
//! written — harmless, because message ids are deterministic and every later step is
//! idempotent. When the audience is exhausted it emits `Sealed { total }`, which tells reconcile
//! how many messages the campaign has.
//!
//! Each campaign is chunked by its own task, so a 10M-recipient campaign does not hold up
//! another campaign; producers block on the bounded chunks topic, so chunking runs only as far
//! ahead of delivery as the topic capacity allows. Memory: one chunk per running campaign.
//!
//! It is not: a scheduler (campaigns arrive when triggered) and it never renders.

use crate::SharedStore;
use pipeline::{topics, Emitter, Input, Shutdown, Stage, StageError, TopicBackend};
use schemas::*;
use std::collections::HashMap;
use std::result::Result;
use std::sync::{Arc, Mutex, Weak};
use storage::CampaignStatus;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct ChunkConfig {
    /// Recipients per chunk.
    pub chunk_size: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self { chunk_size: 1_000 }
    }
}

/// The chunk stage.
pub struct Chunk {
    store: SharedStore,
    topics: Arc<dyn TopicBackend>,
    config: ChunkConfig,
    shutdown: Shutdown,
    running: Mutex<HashMap<(TenantId, CampaignId), JoinHandle<()>>>,
    /// Chunker tasks hold the stage alive through this.
    me: Weak<Chunk>,
}

impl Chunk {
    pub fn new(
        store: SharedStore,
        topics: Arc<dyn TopicBackend>,
        config: ChunkConfig,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            store,
            topics,
            config,
            shutdown,
            running: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Resumes every running campaign whose chunking had not finished (call once at start-up).
    pub async fn resume(&self) -> crate::Result<usize> {
        let mut resumed = 0;
        for tenant in self.store.list_tenants().await? {
            for campaign in self.store.list_campaigns(tenant.id).await? {
                let checkpoint = self.store.get_checkpoint(tenant.id, campaign.id).await?;
                if matches!(
                    campaign.status,
                    CampaignStatus::Running | CampaignStatus::Paused | CampaignStatus::Cancelled
                ) && !checkpoint.done
                {
                    let trigger = campaign.triggered_ms.unwrap_or_else(now_ms);
                    self.start(SendRequest { tenant: tenant.id, campaign: campaign.id, requested_at_ms: trigger });
                    resumed += 1;
                }
            }
        }
        Ok(resumed)
    }

    /// Starts (or keeps) the chunker of one campaign.
    fn start(&self, request: SendRequest) {
        let Some(this) = self.me.upgrade() else { return };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|_, task| !task.is_finished());
        let key = (request.tenant, request.campaign);
        if running.contains_key(&key) {
            return;
        }
        running.insert(
            key,
            tokio::spawn(async move {
                let mut attempt = 0u32;
                while !this.shutdown.is_triggered() {
                    let result = tokio::select! {
                        r = this.run(&request) => r,
                        // Blocked past the drain grace (its consumer stopped): the checkpoint
                        // resumes it after restart.
                        _ = this.shutdown.expired() => return,
                    };
                    match result {
                        Ok(()) => return,
                        Err(e) => {
                            attempt += 1;
                            tracing::warn!(tenant = %request.tenant, campaign = %request.campaign, attempt, error = %e,
                                "chunking failed; resuming from checkpoint");
                            tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt.min(25))))
                                .await;
                        }
                    }
                }
            }),
        );
    }

    /// Chunks one campaign from its checkpoint to the end.
    async fn run(&self, request: &SendRequest) -> crate::Result<()> {
        let (tenant, campaign_id) = (request.tenant, request.campaign);
        let Some(campaign) = self.store.get_campaign(tenant, campaign_id).await? else {
            tracing::warn!(%tenant, campaign = %campaign_id, "send for an unknown campaign ignored");
            return Ok(());
        };
        let mut checkpoint = self.store.get_checkpoint(tenant, campaign_id).await?;
        let mut out = Emitter::new(self.topics.clone());
        while !checkpoint.done {
            if self.shutdown.is_triggered() {
                return Ok(());
            }
            let recipients = self
                .store
                .read_recipients(
                    tenant,
                    campaign.audience,
                    RecipientId(checkpoint.next_recipient),
                    self.config.chunk_size,
                )
                .await?;
            match recipients.last() {
                Some(last) => {
                    let next_recipient = last.id.0 + 1;
                    let count = recipients.len() as u64;
                    let chunk = schemas::Chunk {
                        tenant,
                        campaign: campaign_id,
                        seq: checkpoint.next_seq,
                        trigger_ms: request.requested_at_ms,
                        recipients,
                    };
                    out.emit(&topics::CHUNKS, tenant, &chunk)?;
                    out.flush().await?;
                    checkpoint.next_recipient = next_recipient;
                    checkpoint.emitted += count;
                    checkpoint.next_seq += 1;
                }
                None => {
                    let sealed = OutcomeEvent::Sealed { tenant, campaign: campaign_id, total: checkpoint.emitted };
                    out.emit(&topics::OUTCOMES, tenant, &OutcomeBatch { tenant, events: vec![sealed] })?;
                    out.flush().await?;
                    checkpoint.done = true;
                }
            }
            self.store.put_checkpoint(tenant, campaign_id, checkpoint).await?;
        }
        Ok(())
    }

    /// Waits for every chunker to stop (after shutdown was triggered).
    pub async fn drain(&self) {
        let tasks: Vec<_> = self.running.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, t)| t).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Stage for Chunk {
    type In = SendRequest;

    fn name(&self) -> &'static str {
        "chunk"
    }

    async fn process(&self, batch: Vec<Input<SendRequest>>, _out: &mut Emitter) -> Result<(), StageError> {
        for input in batch {
            // The request is only a trigger: the durable checkpoint and the campaign's `Running`
            // status carry the work across restarts (see `resume`).
            self.start(input.value);
        }
        Ok(())
    }
}
