//! The campaign lifecycle and tenant deletion: the one owner of status changes.
//!
//! The API, `herald demo`, `herald bench` and the scheduler all change a campaign's status
//! through [`Lifecycle`]; nothing else writes it. Every change is a compare-and-set on the
//! campaign's version ([`storage::Catalog::update_campaign`]): of a pause and a cancel sent
//! together, or a scheduled start racing a cancel, exactly one wins and the other gets
//! [`LifecycleError::Conflict`] — the final status is always the winner's.
//!
//! ```text
//! draft ──send──▶ scheduled ──(time)──▶ running ◀──resume── paused
//!   │               │                    │  └──pause──────────▶│
//!   └──cancel───────┴──────cancel────────┴─────────cancel──────┴──▶ cancelled
//! running/paused ──(every message terminal)──▶ completed   (derived from the counters)
//! ```
//!
//! Deleting a tenant ([`Lifecycle::delete_tenant`]) makes it disappear for every caller at
//! once (its row becomes a tombstone: tokens are refused), cancels its campaigns and releases
//! its senders; [`Lifecycle::housekeeping`] later purges its data, and starts scheduled
//! campaigns whose time has come.
//!
//! It is not: the stages' view of the status (see [`crate::control`]), nor the HTTP layer.

use pipeline::{topics, Emitter, TopicBackend};
use schemas::envelope::Headers;
use schemas::{now_ms, CampaignId, SendRequest, TenantId};
use std::sync::Arc;
use std::time::Duration;
use storage::{Campaign, CampaignCounters, CampaignStatus, ProviderKind, SharedState, Store, TenantState};

/// A lifecycle request on a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send,
    Pause,
    Resume,
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Send => "send",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("campaign not found")]
    NotFound,
    /// The campaign's status does not allow the action.
    #[error("cannot {action} a campaign that is {status}")]
    Illegal { action: &'static str, status: &'static str },
    /// Another change won the race; nothing was applied.
    #[error("the campaign changed while this request ran (now {status}); nothing was applied")]
    Conflict { status: &'static str },
    #[error(transparent)]
    Store(#[from] storage::Error),
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
}

/// The status a caller sees: the control status, or `completed` once every message is terminal.
pub fn shown_status(campaign: &Campaign, counters: &CampaignCounters) -> CampaignStatus {
    match (campaign.status, counters.completed_ms) {
        (CampaignStatus::Cancelled, _) => CampaignStatus::Cancelled,
        (_, Some(_)) => CampaignStatus::Completed,
        (status, None) => status,
    }
}

/// What a legal action changes: the new status, and whether the campaign's audience must be
/// chunked (a start, or a cancel of a campaign never started, whose recipients all become
/// `cancelled` outcomes so its counters add up).
fn decide(action: Action, shown: CampaignStatus, scheduled_ahead: bool) -> Option<(CampaignStatus, bool)> {
    use CampaignStatus::*;
    Some(match (action, shown) {
        (Action::Send, Draft) if scheduled_ahead => (Scheduled, false),
        (Action::Send, Draft | Scheduled) => (Running, true),
        (Action::Pause, Running) => (Paused, false),
        (Action::Resume, Paused) => (Running, false),
        (Action::Cancel, Draft | Scheduled) => (Cancelled, true),
        (Action::Cancel, Running | Paused) => (Cancelled, false),
        _ => return None,
    })
}

/// The lifecycle owner (see the module docs).
pub struct Lifecycle {
    store: Arc<dyn Store>,
    state: Arc<dyn SharedState>,
    topics: Arc<dyn TopicBackend>,
}

/// Rows a purge step removes before yielding.
const PURGE_STEP: usize = 10_000;
/// How long a purged tenant is swept again for rows written by events already in flight
/// when it was purged (reconcile drops a purged tenant's events within seconds).
const PURGE_SETTLE: Duration = Duration::from_secs(60);

impl Lifecycle {
    pub fn new(store: Arc<dyn Store>, state: Arc<dyn SharedState>, topics: Arc<dyn TopicBackend>) -> Self {
        Self { store, state, topics }
    }

    /// The shared state (ids for new objects).
    pub fn state(&self) -> &Arc<dyn SharedState> {
        &self.state
    }

    /// Applies `action` to a campaign of `tenant` (compare-and-set; see the module docs).
    /// `headers` (trace context) go on the records it produces.
    pub async fn apply(
        &self,
        tenant: TenantId,
        id: CampaignId,
        action: Action,
        headers: &Headers,
    ) -> Result<(Campaign, CampaignCounters), LifecycleError> {
        let campaign = self.store.get_campaign(tenant, id).await?.ok_or(LifecycleError::NotFound)?;
        self.apply_to(campaign, action, headers, true).await
    }

    async fn apply_to(
        &self,
        mut campaign: Campaign,
        action: Action,
        headers: &Headers,
        chunk_cancelled: bool,
    ) -> Result<(Campaign, CampaignCounters), LifecycleError> {
        let counters = self.store.get_counters(campaign.tenant, campaign.id).await?.unwrap_or_default();
        let shown = shown_status(&campaign, &counters);
        let now = now_ms();
        let ahead = campaign.triggered_ms.is_some_and(|at| at > now);
        let (status, chunk) = decide(action, shown, ahead)
            .ok_or(LifecycleError::Illegal { action: action.as_str(), status: shown.as_str() })?;
        let version = campaign.version;
        campaign.status = status;
        if status == CampaignStatus::Running && matches!(shown, CampaignStatus::Draft | CampaignStatus::Scheduled) {
            campaign.triggered_ms = Some(now);
        }
        if !self.store.update_campaign(&campaign, version).await? {
            let current =
                self.store.get_campaign(campaign.tenant, campaign.id).await?.ok_or(LifecycleError::NotFound)?;
            return Err(LifecycleError::Conflict { status: shown_status(&current, &counters).as_str() });
        }
        campaign.version = version + 1;
        // Every stage sees the new status within its cache TTL.
        self.state.publish_status(campaign.tenant, campaign.id, status).await?;
        // The status is durable first: if the process dies before the request is produced,
        // chunk resumes the campaign at start-up from its status and checkpoint.
        if chunk && (status == CampaignStatus::Running || chunk_cancelled) {
            let mut out = Emitter::new(self.topics.clone());
            out.set_headers(headers.clone());
            let request =
                SendRequest { tenant: campaign.tenant, campaign: campaign.id, requested_at_ms: now, from_seq: 0 };
            out.emit(&topics::SENDS, &request)?;
            out.flush().await?;
        }
        Ok((campaign, counters))
    }

    /// Starts scheduled campaigns whose time has come; how many started. A campaign cancelled
    /// in the meantime stays cancelled (the start loses the compare-and-set).
    pub async fn start_due(&self, now: u64) -> Result<usize, LifecycleError> {
        let mut started = 0;
        for tenant in self.store.list_tenants().await? {
            if !tenant.is_active() {
                continue;
            }
            for c in self.store.list_campaigns(tenant.id).await? {
                if c.status == CampaignStatus::Scheduled && c.triggered_ms.is_some_and(|at| at <= now) {
                    match self.apply_to(c, Action::Send, &Headers::default(), true).await {
                        Ok(_) => started += 1,
                        Err(LifecycleError::Conflict { .. } | LifecycleError::Illegal { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(started)
    }

    /// Deletes a tenant: a tombstone (every token of it refused from now on), its campaigns
    /// cancelled, its senders released. `false` when it does not exist or is already deleted.
    pub async fn delete_tenant(&self, id: TenantId) -> Result<bool, LifecycleError> {
        let Some(mut tenant) = self.store.get_tenant(id).await? else { return Ok(false) };
        if !tenant.is_active() {
            return Ok(false);
        }
        tenant.state = TenantState::Deleted { at_ms: now_ms() };
        self.store.put_tenant(&tenant).await?;
        self.settle_deleted(id).await?;
        Ok(true)
    }

    /// Cancels a deleted tenant's campaigns and releases its senders. Idempotent: housekeeping
    /// repeats it, so a crash in the middle of a deletion is finished later.
    async fn settle_deleted(&self, id: TenantId) -> Result<(), LifecycleError> {
        use CampaignStatus::*;
        for campaign in self.store.list_campaigns(id).await? {
            let mut current = campaign;
            // A few tries: a racing status change (the scheduler) may win once.
            for _ in 0..5 {
                if !matches!(current.status, Draft | Scheduled | Running | Paused) {
                    break;
                }
                // Never-started campaigns are not chunked just to be cancelled and purged.
                match self.apply_to(current.clone(), Action::Cancel, &Headers::default(), false).await {
                    Ok(_) | Err(LifecycleError::Illegal { .. }) => break,
                    Err(LifecycleError::Conflict { .. }) => match self.store.get_campaign(id, current.id).await? {
                        Some(c) => current = c,
                        None => break,
                    },
                    Err(e) => return Err(e),
                }
            }
        }
        for kind in ProviderKind::ALL {
            self.store.delete_provider(id, kind).await?;
        }
        Ok(())
    }

    /// Background work: starts due scheduled campaigns, finishes deletions, purges deleted
    /// tenants `purge_after` after their deletion, and expires idempotency records.
    pub async fn housekeeping(&self, purge_after: Duration, idempotency_ttl: Duration) -> Result<(), LifecycleError> {
        let now = now_ms();
        self.start_due(now).await?;
        for mut tenant in self.store.list_tenants().await? {
            match tenant.state {
                TenantState::Active => {}
                TenantState::Deleted { at_ms } => {
                    self.settle_deleted(tenant.id).await?;
                    if at_ms.saturating_add(purge_after.as_millis() as u64) <= now {
                        // Purged first: reconcile then drops the tenant's late events, and the
                        // sweeps below remove whatever was still being written.
                        tenant.state = TenantState::Purged { deleted_ms: at_ms, at_ms: now };
                        self.store.put_tenant(&tenant).await?;
                        tracing::info!(tenant = %tenant.id, "purging a deleted tenant's data");
                    }
                }
                TenantState::Purged { at_ms, .. } => {
                    if now.saturating_sub(at_ms) < PURGE_SETTLE.as_millis() as u64 {
                        self.store.purge_tenant(tenant.id, PURGE_STEP).await?;
                        self.state.purge_tenant(tenant.id, PURGE_STEP).await?;
                    }
                }
            }
        }
        let ttl = idempotency_ttl.as_millis() as u64;
        while self.state.sweep_idempotency(now, ttl, PURGE_STEP).await? == PURGE_STEP {}
        Ok(())
    }

    /// Runs [`Lifecycle::housekeeping`] every `every` until `shutdown`.
    pub async fn run_housekeeping(
        &self,
        every: Duration,
        purge_after: Duration,
        idempotency_ttl: Duration,
        shutdown: pipeline::Shutdown,
    ) {
        while !shutdown.is_triggered() {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
            if let Err(e) = self.housekeeping(purge_after, idempotency_ttl).await {
                tracing::warn!(error = %e, "housekeeping failed; retrying on the next tick");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CampaignStatus::*;

    #[test]
    fn legal_transitions() {
        assert_eq!(decide(Action::Send, Draft, false), Some((Running, true)));
        assert_eq!(decide(Action::Send, Draft, true), Some((Scheduled, false)));
        assert_eq!(decide(Action::Send, Scheduled, false), Some((Running, true)));
        assert_eq!(decide(Action::Pause, Running, false), Some((Paused, false)));
        assert_eq!(decide(Action::Resume, Paused, false), Some((Running, false)));
        assert_eq!(decide(Action::Cancel, Draft, false), Some((Cancelled, true)));
        assert_eq!(decide(Action::Cancel, Paused, false), Some((Cancelled, false)));
        for (action, status) in [
            (Action::Send, Running),
            (Action::Pause, Paused),
            (Action::Pause, Completed),
            (Action::Resume, Running),
            (Action::Cancel, Cancelled),
            (Action::Cancel, Completed),
        ] {
            assert_eq!(decide(action, status, false), None, "{action:?} on {status:?}");
        }
    }
}
