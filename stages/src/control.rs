//! Campaign control as the stages see it: the status the control plane set (running, paused,
//! cancelled), read through a short-lived cache so a pause takes effect within `ttl` (200 ms by
//! default) without a store read per message.
//!
//! - paused: throttle holds the campaign's messages; deliver parks messages already released
//!   (back to `delivery.retry`, unclaimed) instead of calling the provider.
//! - cancelled: render, throttle and deliver turn not-yet-sent messages into `Cancelled`
//!   outcomes, so the counters still add up to the audience.
//!
//! It is not: the writer of campaign status (the API is).

use crate::SharedStore;
use schemas::{CampaignId, TenantId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use storage::CampaignStatus;

/// Cached view of campaign statuses.
pub struct CampaignControl {
    store: SharedStore,
    ttl: Duration,
    cache: Mutex<HashMap<(TenantId, CampaignId), (CampaignStatus, Instant)>>,
}

impl CampaignControl {
    pub fn new(store: SharedStore, ttl: Duration) -> Self {
        Self { store, ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// How stale a status read may be.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The campaign's status, at most `ttl` old. A missing campaign reads as cancelled.
    pub async fn status(&self, tenant: TenantId, campaign: CampaignId) -> crate::Result<CampaignStatus> {
        if let Some((status, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&(tenant, campaign)) {
            if at.elapsed() < self.ttl {
                return Ok(*status);
            }
        }
        let status =
            self.store.get_campaign(tenant, campaign).await?.map(|c| c.status).unwrap_or(CampaignStatus::Cancelled);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 16_384 {
            cache.clear();
        }
        cache.insert((tenant, campaign), (status, Instant::now()));
        Ok(status)
    }

    /// Waits while the campaign is paused; returns the status it left the pause with.
    pub async fn wait_unless_paused(&self, tenant: TenantId, campaign: CampaignId) -> crate::Result<CampaignStatus> {
        loop {
            let status = self.status(tenant, campaign).await?;
            if status != CampaignStatus::Paused {
                return Ok(status);
            }
            tokio::time::sleep(self.ttl).await;
        }
    }
}
