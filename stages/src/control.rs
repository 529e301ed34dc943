//! Campaign control as the stages see it: the status the lifecycle set (running, paused,
//! cancelled), read from the shared state's published flags (the catalog row when none was
//! published) through a short-lived cache, so a pause takes effect within `ttl` (200 ms by
//! default) without a read per message.
//!
//! - paused: chunk stops reading the audience, throttle and deliver hold the campaign's
//!   messages (the runner keeps them aside; nothing is claimed, no pacing slot is taken).
//! - cancelled: render, throttle and deliver turn not-yet-sent messages into `Cancelled`
//!   outcomes, so the counters still add up to the audience.
//!
//! It is not: the writer of campaign status (`crate::lifecycle` is).

use schemas::helpers::TtlCache;
use schemas::{CampaignId, TenantId};
use std::sync::Arc;
use std::time::Duration;
use storage::{CampaignStatus, Catalog, SharedState};

/// Cached view of campaign statuses.
pub struct CampaignControl {
    catalog: Arc<dyn Catalog>,
    state: Arc<dyn SharedState>,
    cache: TtlCache<(TenantId, CampaignId), CampaignStatus>,
}

impl CampaignControl {
    pub fn new(catalog: Arc<dyn Catalog>, state: Arc<dyn SharedState>, ttl: Duration) -> Self {
        Self { catalog, state, cache: TtlCache::new(ttl, 16_384) }
    }

    /// How stale a status read may be.
    pub fn ttl(&self) -> Duration {
        self.cache.ttl()
    }

    /// The campaign's status, at most `ttl` old. A missing campaign reads as cancelled.
    pub async fn status(&self, tenant: TenantId, campaign: CampaignId) -> crate::Result<CampaignStatus> {
        if let Some(status) = self.cache.get(&(tenant, campaign)) {
            return Ok(status);
        }
        let status = match self.state.campaign_status(tenant, campaign).await? {
            Some(s) => s,
            None => self
                .catalog
                .get_campaign(tenant, campaign)
                .await?
                .map(|c| c.status)
                .unwrap_or(CampaignStatus::Cancelled),
        };
        self.cache.insert((tenant, campaign), status);
        Ok(status)
    }
}
