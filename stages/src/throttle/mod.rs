//! throttle: messages.rendered → messages.ready. Decides who goes next.
//!
//! - **Per-tenant and per-campaign rate**: a token bucket per tenant (and per campaign with its
//!   own limit) admits messages at the configured rate, with up to one second of burst so the
//!   deliver stage always has a backlog to pace from (exact pacing happens there, per sender).
//!   The buckets are this process's: `messages.rendered` is keyed by tenant, so a tenant's
//!   records all go to one partition, which one worker owns.
//! - **Fairness**: the [`gate::FairGate`] shares the run-ahead budget between waiting tenants by
//!   weight, so a 10M-recipient campaign cannot starve a 1k one of another tenant.
//! - **Bounded run-ahead**: at most `max_in_flight` messages (and `max_in_flight_per_tenant`
//!   per tenant) may sit released-but-undelivered; budget returns (in `on_tick`) as deliver
//!   commits its offsets on `messages.ready`.
//! - **Messaging-tier quota** ([`quota`]) for WhatsApp routes with a daily limit.
//!
//! One lane per campaign. A campaign that may not release now for reasons of its own (paused,
//! out of tokens or quota, at its tenant's in-flight cap) returns `Step::Wait` with the part of
//! its batch still to release; the runner holds it and every other campaign goes on. Only the
//! shared run-ahead budget is waited for inside a step (briefly, fair-queued): it is everyone's
//! backpressure, so the runner should fetch no more while every lane waits for it.
//!
//! It is not: the pacer of provider calls (see `deliver`), and it never drops a message.

pub mod gate;
pub mod quota;

use crate::control::CampaignControl;
use gate::{FairGate, Grant, Outstanding};
use pipeline::{topics, Emitter, Input, Lane, Stage, StageError, Step, TopicBackend};
use quota::{Admit, QuotaGate};
use schemas::helpers::{TokenBucket, TtlCache};
use schemas::*;
use std::collections::HashMap;
use std::result::Result;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::{CampaignStatus, Catalog, ProviderConfig, ProviderKind, ProviderSettings, SharedState};

#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Messages per `messages.ready` record.
    pub ready_batch: usize,
    /// Messages released but not yet taken by deliver, over all tenants.
    pub max_in_flight: u64,
    /// The same, per tenant.
    pub max_in_flight_per_tenant: u64,
    /// In-flight budget above `max_in_flight` for a campaign's first steps when its tenant
    /// heads the fair queue (`gate`'s express reserve): they need not wait for deliver.
    pub express_in_flight: u64,
    /// How long tenant/campaign settings are cached.
    pub settings_ttl: Duration,
    /// The WhatsApp messaging-tier window (24 h at Meta; shorter in tests).
    pub quota_window: Duration,
    /// How long a step waits for run-ahead budget before handing its batch back.
    pub budget_patience: Duration,
    /// How soon a tenant at its own in-flight cap asks again.
    pub budget_retry: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            ready_batch: 500,
            max_in_flight: 40_000,
            max_in_flight_per_tenant: 20_000,
            express_in_flight: 4_000,
            settings_ttl: Duration::from_secs(5),
            quota_window: Duration::from_secs(24 * 3_600),
            budget_patience: Duration::from_millis(500),
            budget_retry: Duration::from_millis(20),
        }
    }
}

/// How often a paused campaign (or one waiting for quota) is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// A campaign's limits, as loaded from the catalog.
#[derive(Debug, Clone, Copy)]
struct Limits {
    weight: u32,
    tenant_rate: Option<u32>,
    campaign_rate: Option<u32>,
    /// The tenant's WhatsApp messaging-tier limit (unique users per window).
    daily_unique_limit: Option<u64>,
}

/// A rate bucket of this process: a tenant's (campaign None) or a campaign's.
type BucketKey = (TenantId, Option<CampaignId>);

/// The throttle stage.
pub struct Throttle {
    catalog: Arc<dyn Catalog>,
    control: Arc<CampaignControl>,
    topics: Arc<dyn TopicBackend>,
    config: ThrottleConfig,
    gate: FairGate,
    outstanding: Outstanding,
    quota: QuotaGate,
    limits: TtlCache<(TenantId, CampaignId), Limits>,
    buckets: Mutex<HashMap<BucketKey, (TokenBucket, Instant)>>,
    last_sweep: Mutex<Instant>,
}

/// Why a campaign may release nothing more now.
enum Hold {
    Until(u64),
}

impl Throttle {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        state: Arc<dyn SharedState>,
        control: Arc<CampaignControl>,
        topics: Arc<dyn TopicBackend>,
        config: ThrottleConfig,
    ) -> Self {
        Self {
            catalog,
            control,
            topics,
            gate: FairGate::new(config.max_in_flight, config.max_in_flight_per_tenant)
                .with_express_reserve(config.express_in_flight),
            outstanding: Outstanding::default(),
            quota: QuotaGate::new(state, config.quota_window),
            limits: TtlCache::new(config.settings_ttl, 65_536),
            buckets: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            config,
        }
    }

    pub fn gate(&self) -> &FairGate {
        &self.gate
    }

    async fn limits(&self, tenant: TenantId, campaign: CampaignId) -> crate::Result<Limits> {
        if let Some(l) = self.limits.get(&(tenant, campaign)) {
            return Ok(l);
        }
        let t = self.catalog.get_tenant(tenant).await?;
        let c = self.catalog.get_campaign(tenant, campaign).await?;
        let daily_unique_limit = match self.catalog.get_provider(tenant, ProviderKind::WhatsApp).await? {
            Some(ProviderConfig { settings: ProviderSettings::WhatsApp { daily_unique_limit, .. }, .. }) => {
                daily_unique_limit
            }
            _ => None,
        };
        let limits = Limits {
            weight: t.as_ref().map(|t| t.weight).unwrap_or(1),
            tenant_rate: t.and_then(|t| t.rate_limit_per_s),
            campaign_rate: c.and_then(|c| c.rate_limit_per_s),
            daily_unique_limit,
        };
        self.limits.insert((tenant, campaign), limits);
        Ok(limits)
    }

    /// Takes up to `n` tokens from the tenant's and the campaign's buckets (both, or neither
    /// for the part one of them lacks); returns how many and, if fewer, when to ask again.
    fn take_tokens(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        limits: &Limits,
        n: u64,
        now: Instant,
    ) -> (u64, Duration) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut granted = n.min(u64::from(u32::MAX)) as u32;
        let mut wait = Duration::ZERO;
        let mut taken: Vec<(BucketKey, u32)> = Vec::with_capacity(2);
        for (key, rate) in [((tenant, None), limits.tenant_rate), ((tenant, Some(campaign)), limits.campaign_rate)] {
            let Some(rate) = rate else { continue };
            let (bucket, used) =
                buckets.entry(key).or_insert_with(|| (TokenBucket::new(f64::from(rate), rate.max(1), now), now));
            *used = now;
            if (bucket.rate() - f64::from(rate)).abs() > f64::EPSILON {
                bucket.set_rate(f64::from(rate), now);
                bucket.set_burst(rate.max(1), now);
            }
            let (got, next) = bucket.take_up_to(granted, now);
            if got < granted {
                wait = wait.max(next);
            }
            granted = got;
            taken.push((key, got));
        }
        // A later bucket granted fewer than an earlier one took: give the difference back.
        for (key, got) in taken {
            if let Some((bucket, _)) = buckets.get_mut(&key) {
                bucket.refund(got - granted);
            }
        }
        (u64::from(granted), wait)
    }

    fn refund_tokens(&self, tenant: TenantId, campaign: CampaignId, n: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for key in [(tenant, None), (tenant, Some(campaign))] {
            if let Some((bucket, _)) = buckets.get_mut(&key) {
                bucket.refund(n.min(u64::from(u32::MAX)) as u32);
            }
        }
    }

    /// Releases as much of `batch` as may go now; `Err(Hold)` with the rest left in `batch`.
    async fn release(&self, batch: &mut MessageBatch, out: &mut Emitter) -> crate::Result<Result<(), Hold>> {
        let (tenant, campaign) = (batch.tenant, batch.campaign);
        while !batch.messages.is_empty() {
            match self.control.status(tenant, campaign).await? {
                CampaignStatus::Paused => return Ok(Err(Hold::Until(now_ms() + RECHECK.as_millis() as u64))),
                CampaignStatus::Cancelled => {
                    let messages = std::mem::take(&mut batch.messages);
                    out.emit(&topics::OUTCOMES, &cancelled(tenant, messages))?;
                    self.quota.forget(tenant, campaign).await?;
                    return Ok(Ok(()));
                }
                _ => {}
            }
            let limits = self.limits(tenant, campaign).await?;
            let want = batch.messages.len().min(self.config.ready_batch.max(1)) as u64;
            let budget = match self
                .gate
                .acquire(tenant, limits.weight, want, self.config.budget_patience, out.is_express())
                .await
            {
                Grant::Granted(n) => n,
                Grant::TenantFull => {
                    return Ok(Err(Hold::Until(now_ms() + self.config.budget_retry.as_millis() as u64)))
                }
                // Still due at once: the lane stays busy-like, its turn comes again.
                Grant::Timeout => return Ok(Err(Hold::Until(now_ms()))),
            };
            let now = Instant::now();
            let (mut n, wait) = self.take_tokens(tenant, campaign, &limits, budget, now);
            self.gate.release(tenant, budget - n);
            if n == 0 {
                return Ok(Err(Hold::Until(now_ms() + (wait.as_millis() as u64).max(1))));
            }
            let whatsapp = batch.messages[0].content.channel() == Channel::WhatsApp;
            if let Some(limit) = limits.daily_unique_limit.filter(|_| whatsapp) {
                let admitted = match self.quota.admit(tenant, campaign, limit, n).await {
                    Ok(a) => a,
                    Err(e) => {
                        self.refund_tokens(tenant, campaign, n);
                        self.gate.release(tenant, n);
                        return Err(e);
                    }
                };
                let granted = match admitted {
                    Admit::Granted(k) => k.min(n),
                    Admit::WaitUntil(_) => 0,
                };
                self.refund_tokens(tenant, campaign, n - granted);
                self.gate.release(tenant, n - granted);
                if let Admit::WaitUntil(resume) = admitted {
                    // Looked at again every `RECHECK` (a cancel must not wait for the quota).
                    return Ok(Err(Hold::Until(resume.min(now_ms() + RECHECK.as_millis() as u64))));
                }
                n = granted;
            }
            let rest = batch.messages.split_off(n as usize);
            let ready = MessageBatch { tenant, campaign, messages: std::mem::replace(&mut batch.messages, rest) };
            let partition = topics::READY.partition_of(&ready);
            out.emit(&topics::READY, &ready)?;
            let placed = match out.flush().await {
                Ok(p) => p,
                Err(e) => {
                    // Not released after all: the budget comes back, the messages go back.
                    self.gate.release(tenant, n);
                    let mut messages = ready.messages;
                    messages.append(&mut batch.messages);
                    batch.messages = messages;
                    return Err(e.into());
                }
            };
            if let Some(offset) = placed.last() {
                self.outstanding.push(partition, *offset, tenant, n);
            }
        }
        Ok(Ok(()))
    }

    /// Returns run-ahead budget for what deliver has committed past.
    async fn return_budget(&self) {
        for partition in self.outstanding.partitions() {
            let committed = self.topics.committed(topics::READY.name(), topics::DELIVER.name, partition).await;
            let Ok(Some(committed)) = committed else { continue };
            for (tenant, n) in self.outstanding.take_done(partition, committed) {
                self.gate.release(tenant, n);
            }
        }
        let now = Instant::now();
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*last) > Duration::from_secs(10) {
            *last = now;
            self.gate.sweep();
            let idle = self.config.settings_ttl.max(Duration::from_secs(60));
            self.buckets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (_, used)| now.duration_since(*used) < idle);
        }
    }
}

/// Cancelled outcomes for messages a cancelled campaign will not send.
pub(crate) fn cancelled(tenant: TenantId, messages: Vec<RenderedMessage>) -> OutcomeBatch {
    let now = now_ms();
    let events = messages
        .into_iter()
        .map(|m| {
            OutcomeEvent::Message(Outcome {
                key: m.key,
                recipient: m.recipient,
                address: m.address,
                kind: OutcomeKind::Cancelled,
                attempts: m.attempt,
                at_ms: now,
                trigger_ms: m.trigger_ms,
            })
        })
        .collect();
    OutcomeBatch { tenant, events }
}

impl Stage for Throttle {
    type In = MessageBatch;

    fn name(&self) -> &'static str {
        topics::THROTTLE.name
    }

    fn lane(&self, batch: &MessageBatch) -> Lane {
        Lane::campaign(batch.tenant, batch.campaign)
    }

    fn lane_of_encoded(&self, bytes: &[u8]) -> Option<Lane> {
        schemas::campaign_of_encoded(bytes).map(|(tenant, campaign)| Lane::campaign(tenant, campaign))
    }

    async fn process(
        &self,
        batch: Vec<Input<MessageBatch>>,
        out: &mut Emitter,
    ) -> Result<Step<MessageBatch>, StageError> {
        for (i, input) in batch.into_iter().enumerate() {
            let mut value = input.value;
            if let Err(Hold::Until(until_ms)) = self.release(&mut value, out).await? {
                return Ok(Step::Wait { from: i, replacement: Some(value), until_ms });
            }
        }
        Ok(Step::Done)
    }

    async fn on_tick(&self) {
        self.return_budget().await;
    }

    fn metrics(&self) -> Vec<pipeline::Sample> {
        let help = "messages released to deliver and not yet taken (the run-ahead budget in use)";
        vec![pipeline::Sample::gauge("herald_throttle_in_flight", help, self.gate.in_flight() as f64)]
    }
}
