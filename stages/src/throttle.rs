//! throttle: messages.rendered → messages.ready. Decides who goes next.
//!
//! - **Per-tenant and per-campaign rate**: a token bucket per tenant (and per campaign with its
//!   own limit) admits messages at the configured rate, with up to one second of burst so the
//!   deliver stage always has a backlog to pace from (exact pacing happens there, per sender).
//! - **Fairness**: a weighted fair gate shares the global run-ahead budget between tenants by
//!   weight (start-time fair queuing on a virtual clock), so a 10M-recipient campaign cannot
//!   starve a 1k one of another tenant.
//! - **Bounded run-ahead**: at most `max_in_flight` messages (and `max_in_flight_per_tenant`
//!   per tenant) may sit released-but-undelivered. Budget returns when deliver commits its
//!   offsets on `messages.ready` — read through the topic backend, so this works the same with
//!   Fluvio.
//!
//! It is not: the pacer of provider calls (see `deliver`), and it never drops a message.

use crate::control::CampaignControl;
use crate::quota::{Admit, QuotaGate};
use crate::SharedStore;
use pipeline::{topics, Emitter, Input, Offset, Partition, Stage, StageError, TopicBackend};
use schemas::*;
use std::collections::{HashMap, VecDeque};
use std::result::Result;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Messages per `messages.ready` record.
    pub ready_batch: usize,
    /// Messages released but not yet taken by deliver, over all tenants.
    pub max_in_flight: u64,
    /// The same, per tenant.
    pub max_in_flight_per_tenant: u64,
    /// Consumer group of the deliver stage on `messages.ready`.
    pub deliver_group: &'static str,
    /// How often deliver's progress is polled to return budget.
    pub poll: Duration,
    /// How long tenant/campaign settings are cached.
    pub settings_ttl: Duration,
    /// The WhatsApp messaging-tier window (24 h at Meta; shorter in tests).
    pub quota_window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            ready_batch: 500,
            max_in_flight: 40_000,
            max_in_flight_per_tenant: 20_000,
            deliver_group: "deliver",
            poll: Duration::from_millis(5),
            settings_ttl: Duration::from_secs(5),
            quota_window: Duration::from_secs(24 * 3_600),
        }
    }
}

/// A token bucket on an injected clock (the throttle decision, benchmarked on its own).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_s: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate_per_s: f64::from(rate_per_s.max(1)), burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        self.last = now;
    }

    /// A bucket that starts empty: no burst until the holder has been idle.
    pub fn empty(rate_per_s: u32, burst: u32, now: Instant) -> Self {
        Self { tokens: 0.0, ..Self::new(rate_per_s, burst, now) }
    }

    /// How long until one token is available (zero: now), taking nothing.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate_per_s)
        }
    }

    /// Changes the refill rate from now on (tokens accrued so far are kept).
    pub fn set_rate(&mut self, rate_per_s: f64, now: Instant) {
        self.refill(now);
        self.rate_per_s = rate_per_s.max(0.1);
    }

    pub fn rate(&self) -> f64 {
        self.rate_per_s
    }

    /// Takes `n` tokens, or says how long until they are available (taking nothing).
    /// Requests above the burst are allowed once the bucket is full, going into debt.
    pub fn take(&mut self, n: u32, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let need = f64::from(n).min(self.burst);
        if self.tokens >= need {
            self.tokens -= f64::from(n);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.rate_per_s))
        }
    }
}

#[derive(Default)]
struct TenantShare {
    in_flight: u64,
    /// Virtual time: messages granted / weight.
    vtime: f64,
    waiting: u32,
}

#[derive(Default)]
struct GateState {
    in_flight: u64,
    tenants: HashMap<TenantId, TenantShare>,
}

/// Weighted fair sharing of a global in-flight budget between tenants.
pub struct FairGate {
    max_in_flight: u64,
    max_per_tenant: u64,
    state: Mutex<GateState>,
    changed: Notify,
}

impl FairGate {
    pub fn new(max_in_flight: u64, max_per_tenant: u64) -> Self {
        Self { max_in_flight, max_per_tenant, state: Mutex::new(GateState::default()), changed: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `tenant` may release `n` messages, then accounts them as in flight.
    pub async fn acquire(&self, tenant: TenantId, weight: u32, n: u64) {
        {
            let mut state = self.lock();
            // A tenant that was idle joins at the current virtual time: no banked credit.
            let floor = state
                .tenants
                .values()
                .filter(|t| t.waiting > 0 || t.in_flight > 0)
                .map(|t| t.vtime)
                .fold(f64::INFINITY, f64::min);
            let share = state.tenants.entry(tenant).or_default();
            if share.waiting == 0 && share.in_flight == 0 && floor.is_finite() {
                share.vtime = share.vtime.max(floor);
            }
            share.waiting += 1;
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let global = state.in_flight;
                let fits = |s: &TenantShare| {
                    (global == 0 || global + n <= self.max_in_flight)
                        && (s.in_flight == 0 || s.in_flight + n <= self.max_per_tenant)
                };
                let best = state
                    .tenants
                    .iter()
                    .filter(|(_, s)| s.waiting > 0 && fits(s))
                    .min_by(|a, b| a.1.vtime.total_cmp(&b.1.vtime))
                    .map(|(id, _)| *id);
                if best == Some(tenant) {
                    state.in_flight += n;
                    if let Some(share) = state.tenants.get_mut(&tenant) {
                        share.in_flight += n;
                        share.waiting -= 1;
                        share.vtime += n as f64 / f64::from(weight.max(1));
                    }
                    drop(state);
                    self.changed.notify_waiters();
                    return;
                }
            }
            notified.await;
        }
    }

    /// Returns budget once deliver has taken `n` messages of `tenant`.
    pub fn release(&self, tenant: TenantId, n: u64) {
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(n);
            if let Some(share) = state.tenants.get_mut(&tenant) {
                share.in_flight = share.in_flight.saturating_sub(n);
            }
        }
        self.changed.notify_waiters();
    }

    /// Messages currently in flight (released, not yet taken by deliver).
    pub fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }
}

struct Limits {
    weight: u32,
    tenant: Option<Arc<tokio::sync::Mutex<TokenBucket>>>,
    campaign: Option<Arc<tokio::sync::Mutex<TokenBucket>>>,
    /// The tenant's WhatsApp messaging-tier limit (unique users per window).
    daily_unique_limit: Option<u64>,
    loaded: Instant,
}

/// Released records not yet consumed by deliver: partition → (offset, tenant, messages).
type Outstanding = HashMap<Partition, VecDeque<(Offset, TenantId, u64)>>;

/// The throttle stage.
pub struct Throttle {
    store: SharedStore,
    control: Arc<CampaignControl>,
    topics: Arc<dyn TopicBackend>,
    config: ThrottleConfig,
    gate: Arc<FairGate>,
    quota: QuotaGate,
    limits: Mutex<HashMap<(TenantId, CampaignId), Arc<Limits>>>,
    tenant_buckets: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<TokenBucket>>>>,
    outstanding: Arc<Mutex<Outstanding>>,
}

impl Throttle {
    /// Creates the stage and its budget-return poller (which stops with `shutdown`).
    pub fn new(
        store: SharedStore,
        control: Arc<CampaignControl>,
        topics: Arc<dyn TopicBackend>,
        config: ThrottleConfig,
        shutdown: pipeline::Shutdown,
    ) -> Arc<Self> {
        let gate = Arc::new(FairGate::new(config.max_in_flight, config.max_in_flight_per_tenant));
        let quota = QuotaGate::new(store.clone(), control.clone(), config.quota_window, shutdown.clone());
        let this = Arc::new(Self {
            quota,
            store,
            control,
            topics,
            gate,
            config,
            limits: Mutex::new(HashMap::new()),
            tenant_buckets: Mutex::new(HashMap::new()),
            outstanding: Arc::new(Mutex::new(HashMap::new())),
        });
        let poller = this.clone();
        tokio::spawn(async move {
            while !shutdown.is_triggered() {
                tokio::time::sleep(poller.config.poll).await;
                poller.return_budget().await;
            }
        });
        this
    }

    pub fn gate(&self) -> &FairGate {
        &self.gate
    }

    async fn return_budget(&self) {
        let partitions: Vec<Partition> = {
            let outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
            outstanding.iter().filter(|(_, q)| !q.is_empty()).map(|(p, _)| *p).collect()
        };
        for p in partitions {
            let Ok(done) = self.topics.committed(topics::READY.name(), self.config.deliver_group, p).await else {
                continue;
            };
            let mut released = Vec::new();
            {
                let mut outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
                let Some(queue) = outstanding.get_mut(&p) else { continue };
                while queue.front().is_some_and(|(offset, _, _)| *offset < done) {
                    released.extend(queue.pop_front());
                }
            }
            for (_, tenant, n) in released {
                self.gate.release(tenant, n);
            }
        }
    }

    async fn limits(&self, tenant: TenantId, campaign: CampaignId) -> crate::Result<Arc<Limits>> {
        if let Some(l) = self.limits.lock().unwrap_or_else(|p| p.into_inner()).get(&(tenant, campaign)) {
            if l.loaded.elapsed() < self.config.settings_ttl {
                return Ok(l.clone());
            }
        }
        let now = Instant::now();
        let t = self.store.get_tenant(tenant).await?;
        let c = self.store.get_campaign(tenant, campaign).await?;
        let bucket = |rate: u32| Arc::new(tokio::sync::Mutex::new(TokenBucket::new(rate, rate, now)));
        // Tenant buckets outlive the settings cache so their state (tokens) is kept.
        let tenant_bucket = t.as_ref().and_then(|t| t.rate_limit_per_s).map(|rate| {
            let mut buckets = self.tenant_buckets.lock().unwrap_or_else(|p| p.into_inner());
            buckets.entry(tenant).or_insert_with(|| bucket(rate)).clone()
        });
        let old_campaign_bucket = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant, campaign))
            .and_then(|l| l.campaign.clone());
        let daily_unique_limit = match self.store.get_provider(tenant, storage::ProviderKind::WhatsApp).await? {
            Some(storage::ProviderConfig {
                settings: storage::ProviderSettings::WhatsApp { daily_unique_limit, .. },
                ..
            }) => daily_unique_limit,
            _ => None,
        };
        let limits = Arc::new(Limits {
            daily_unique_limit,
            weight: t.as_ref().map(|t| t.weight).unwrap_or(1),
            tenant: tenant_bucket,
            campaign: c
                .and_then(|c| c.rate_limit_per_s)
                .map(|rate| old_campaign_bucket.unwrap_or_else(|| bucket(rate))),
            loaded: now,
        });
        let mut cache = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 4_096 {
            cache.clear();
        }
        cache.insert((tenant, campaign), limits.clone());
        Ok(limits)
    }
}

/// Cancelled outcomes for messages a cancelled campaign will not send.
fn cancelled(tenant: TenantId, messages: Vec<RenderedMessage>) -> OutcomeBatch {
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

async fn wait_for_tokens(bucket: &tokio::sync::Mutex<TokenBucket>, n: u32) {
    let mut bucket = bucket.lock().await;
    while let Err(wait) = bucket.take(n, Instant::now()) {
        tokio::time::sleep(wait).await;
    }
}

impl Stage for Throttle {
    type In = MessageBatch;

    fn name(&self) -> &'static str {
        "throttle"
    }

    async fn process(&self, batch: Vec<Input<MessageBatch>>, out: &mut Emitter) -> Result<(), StageError> {
        for input in batch {
            let MessageBatch { tenant, campaign, mut messages } = input.value;
            let limits = self.limits(tenant, campaign).await?;
            // A paused campaign holds here (and with it this partition) until resumed.
            if self.control.wait_unless_paused(tenant, campaign).await? == storage::CampaignStatus::Cancelled {
                out.emit(&topics::OUTCOMES, tenant, &cancelled(tenant, messages)).map_err(crate::Error::from)?;
                continue;
            }
            let quota = limits
                .daily_unique_limit
                .filter(|_| messages.first().is_some_and(|m| m.content.channel() == Channel::WhatsApp));
            while !messages.is_empty() {
                let mut rest = messages.split_off(messages.len().min(self.config.ready_batch));
                if let Some(limit) = quota {
                    match self.quota.admit(tenant, campaign, limit, messages.len()).await? {
                        Admit::Granted(k) => {
                            let mut later = messages.split_off(k.min(messages.len()));
                            later.append(&mut rest);
                            rest = later;
                        }
                        Admit::Cancelled => {
                            messages.append(&mut rest);
                            out.emit(&topics::OUTCOMES, tenant, &cancelled(tenant, messages))
                                .map_err(crate::Error::from)?;
                            break;
                        }
                        Admit::ShuttingDown => {
                            return Err(StageError::retry(Duration::ZERO, "shutting down while waiting for quota"));
                        }
                    }
                }
                let n = messages.len();
                self.gate.acquire(tenant, limits.weight, n as u64).await;
                for bucket in [&limits.tenant, &limits.campaign].into_iter().flatten() {
                    wait_for_tokens(bucket, n as u32).await;
                }
                let ready = MessageBatch { tenant, campaign, messages: std::mem::replace(&mut messages, rest) };
                out.emit(&topics::READY, tenant, &ready).map_err(crate::Error::from)?;
                let placed = out.flush().await.map_err(crate::Error::from)?;
                let mut outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
                for (partition, offset) in placed {
                    outstanding.entry(partition).or_default().push_back((offset, tenant, n as u64));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_never_exceeds_rate_plus_burst() {
        // Against a naive counter: over a simulated 10 s of greedy takes every millisecond, the
        // number granted in any 1 s window stays ≤ rate + burst.
        let start = Instant::now();
        let (rate, burst) = (500u32, 50u32);
        let mut bucket = TokenBucket::new(rate, burst, start);
        let mut grants = Vec::new();
        for ms in 0..10_000u64 {
            let now = start + Duration::from_millis(ms);
            while bucket.take(1, now).is_ok() {
                grants.push(ms);
            }
        }
        let mut max_window = 0;
        for (i, &t) in grants.iter().enumerate() {
            let in_window = grants[i..].iter().take_while(|&&u| u < t + 1_000).count();
            max_window = max_window.max(in_window);
        }
        assert!(max_window as u32 <= rate + burst, "window {max_window}");
        assert!(grants.len() as u32 >= rate * 10, "achieved {} of {}", grants.len(), rate * 10);
    }

    #[test]
    fn token_bucket_reports_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, 10, start);
        assert!(bucket.take(10, start).is_ok());
        let wait = bucket.take(5, start).unwrap_err();
        assert!(wait >= Duration::from_millis(49) && wait <= Duration::from_millis(51), "{wait:?}");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn fair_gate_shares_by_weight() {
        // Two tenants always waiting; budget of one batch at a time. Tenant 2 has weight 3.
        let gate = Arc::new(FairGate::new(100, 100));
        let granted = Arc::new(Mutex::new(HashMap::<TenantId, u64>::new()));
        let mut tasks = Vec::new();
        for (tenant, weight) in [(TenantId(1), 1), (TenantId(2), 3)] {
            let (gate, granted) = (gate.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..400 {
                    gate.acquire(tenant, weight, 100).await;
                    *granted.lock().unwrap().entry(tenant).or_default() += 100;
                    // Budget comes back when deliver takes the batch, while the tenant's
                    // throttle task is already waiting for its next grant (as in the stage).
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        gate.release(tenant, 100);
                    });
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snapshot = granted.lock().unwrap().clone();
        let (a, b) = (snapshot[&TenantId(1)] as f64, snapshot[&TenantId(2)] as f64);
        let share = b / (a + b);
        assert!((share - 0.75).abs() < 0.05, "weighted share {share} (a={a}, b={b})");
        for t in tasks {
            t.abort();
        }
    }
}
