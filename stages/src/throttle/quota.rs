//! The WhatsApp messaging-tier budget, enforced where messages are released (throttle).
//!
//! A tenant's `daily_unique_limit` caps the unique users messaged per rolling window (24 h at
//! Meta). Every released WhatsApp message is counted as one unique user — never an
//! undercount, so the limit is never overshot — in the shared ledger
//! (`SharedState::reserve_quota`, atomic per tenant). A campaign larger than the remaining
//! budget releases what fits, then its lane waits (the runner holds its records until the
//! resume time; nothing blocks and nothing fails). The wait is recorded (`set_quota_wait`) so
//! progress shows `waiting_for_quota` with the resume time. Retries do not pass here again
//! (their message was counted).
//!
//! It is not: a per-recipient dedup across campaigns (a user messaged by two campaigns counts
//! twice, which errs on the safe side).

use schemas::helpers::TtlCache;
use schemas::{now_ms, CampaignId, TenantId};
use std::sync::Arc;
use std::time::Duration;
use storage::SharedState;

/// What the ledger granted a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// This many messages (≥ 1) may go now.
    Granted(u64),
    /// None may go before this time.
    WaitUntil(u64),
}

pub struct QuotaGate {
    state: Arc<dyn SharedState>,
    window: Duration,
    /// The resume time this process last recorded per waiting campaign (not written again).
    waiting: TtlCache<(TenantId, CampaignId), u64>,
}

impl QuotaGate {
    pub fn new(state: Arc<dyn SharedState>, window: Duration) -> Self {
        Self { state, window, waiting: TtlCache::new(Duration::from_secs(7 * 24 * 3_600), 65_536) }
    }

    /// Admits up to `n` messages of a campaign under `limit`.
    pub async fn admit(&self, tenant: TenantId, campaign: CampaignId, limit: u64, n: u64) -> crate::Result<Admit> {
        let window_ms = self.window.as_millis().max(1) as u64;
        let grant = self.state.reserve_quota(tenant, limit, window_ms, n, now_ms()).await?;
        if grant.granted > 0 {
            // Read, not remembered: the wait may have been recorded by an earlier run.
            self.waiting.remove(&(tenant, campaign));
            if self.state.get_quota_wait(tenant, campaign).await?.is_some() {
                self.state.set_quota_wait(tenant, campaign, None).await?;
                tracing::info!(%tenant, %campaign, "messaging-tier budget available again; continuing");
            }
            return Ok(Admit::Granted(grant.granted));
        }
        let resume = grant.resume_at_ms.unwrap_or_else(|| now_ms() + 1_000);
        if self.waiting.get_stale(&(tenant, campaign)) != Some(resume) {
            self.state.set_quota_wait(tenant, campaign, Some(resume)).await?;
            self.waiting.insert((tenant, campaign), resume);
            tracing::info!(%tenant, %campaign, limit, resume_at_ms = resume, "messaging-tier budget used up; waiting");
        }
        Ok(Admit::WaitUntil(resume))
    }

    /// The campaign no longer waits (it was cancelled while waiting).
    pub async fn forget(&self, tenant: TenantId, campaign: CampaignId) -> crate::Result<()> {
        self.waiting.remove(&(tenant, campaign));
        self.state.set_quota_wait(tenant, campaign, None).await?;
        Ok(())
    }
}
