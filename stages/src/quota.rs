//! The WhatsApp messaging-tier budget, enforced where messages are released (throttle).
//!
//! A tenant's `daily_unique_limit` caps the unique users messaged per rolling window (24 h at
//! Meta). Every released WhatsApp message is counted as one unique user — never an
//! undercount, so the limit is never overshot — in a durable ledger (`ProviderStore::
//! reserve_quota`, atomic per tenant). A campaign larger than the remaining budget releases
//! what fits, then waits: the wait is recorded (`set_quota_wait`) so progress shows
//! `waiting_for_quota` with the resume time, and the campaign continues when budget frees up.
//! Nothing fails while waiting. Retries do not pass here again (their message was counted).
//!
//! It is not: a per-recipient dedup across campaigns (a user messaged by two campaigns counts
//! twice, which errs on the safe side).

use crate::control::CampaignControl;
use crate::SharedStore;
use pipeline::Shutdown;
use schemas::{now_ms, CampaignId, TenantId};
use std::sync::Arc;
use std::time::Duration;
use storage::CampaignStatus;

/// What the gate decided for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// This many of the batch's messages (≥ 1) may go now.
    Granted(usize),
    /// The campaign was cancelled while waiting.
    Cancelled,
    /// Shutting down while waiting: leave the batch for the next run.
    ShuttingDown,
}

pub struct QuotaGate {
    store: SharedStore,
    control: Arc<CampaignControl>,
    window: Duration,
    shutdown: Shutdown,
}

impl QuotaGate {
    pub fn new(store: SharedStore, control: Arc<CampaignControl>, window: Duration, shutdown: Shutdown) -> Self {
        Self { store, control, window, shutdown }
    }

    /// Admits up to `n` messages of a campaign under `limit`, waiting for budget if none is left.
    pub async fn admit(&self, tenant: TenantId, campaign: CampaignId, limit: u64, n: usize) -> crate::Result<Admit> {
        let window_ms = self.window.as_millis().max(1) as u64;
        let mut waiting = false;
        loop {
            let grant = self.store.reserve_quota(tenant, limit, window_ms, n as u64, now_ms()).await?;
            if grant.granted > 0 {
                if waiting {
                    self.store.set_quota_wait(tenant, campaign, None).await?;
                    tracing::info!(%tenant, %campaign, "messaging-tier budget available again; continuing");
                }
                return Ok(Admit::Granted(grant.granted as usize));
            }
            let resume = grant.resume_at_ms.unwrap_or_else(|| now_ms() + 1_000);
            if !waiting {
                self.store.set_quota_wait(tenant, campaign, Some(resume)).await?;
                tracing::info!(%tenant, %campaign, limit, resume_at_ms = resume, "messaging-tier budget used up; waiting");
                waiting = true;
            }
            // Wake at the resume time, checking cancel/shutdown at least every second.
            while now_ms() < resume {
                let step = Duration::from_millis((resume - now_ms()).min(1_000));
                tokio::select! {
                    _ = tokio::time::sleep(step) => {}
                    _ = self.shutdown.wait() => return Ok(Admit::ShuttingDown),
                }
                if self.control.wait_unless_paused(tenant, campaign).await? == CampaignStatus::Cancelled {
                    self.store.set_quota_wait(tenant, campaign, None).await?;
                    return Ok(Admit::Cancelled);
                }
            }
        }
    }
}
