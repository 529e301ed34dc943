//! Senders and their pacing at call time.
//!
//! A [`Sender`] is one sending identity (a WhatsApp phone number id, an SMS from-number, an
//! email from-address). Its token bucket lives in the shared state
//! (`SharedState::take_tokens`: one bucket per sender for every deliver and redeliver worker,
//! on the state's one clock), taken right before each group of calls, so its calls never exceed
//! `rate` in any second beyond its `burst`. A [`Route`] (a tenant's senders for one channel)
//! hands out call slots ([`Route::slots`]) from the senders that have tokens, under the tenant's
//! own bucket when it has a limit.
//!
//! **Adaptive (AIMD).** When the provider says a sender is too fast (WhatsApp 130429, 80007, 4,
//! HTTP 429) the sender's rate is multiplied by [`DECREASE`] (by [`SHARP_DECREASE`] on the
//! 131048 spam limit) at most once per [`COOLDOWN`] — the calls already in flight answer with
//! the same signal — then grows back by [`INCREASE_PER_S`] of the configured rate per second,
//! never above it. The rate is this process's view (each worker adapts to what it hears); the
//! bucket is shared. A stopped sender (WhatsApp 368) takes no more calls, in any worker
//! (`SharedState::stop_sender`).
//!
//! Why not the `leaky-bucket` crate (the stack's first choice): measured, it paced a 2,000/s
//! sender at 1,785/s — after each timed wake it restarts its refill interval from "now"
//! (leaky-bucket 1.1.2, lib.rs:1720), losing the timer's lateness (~1 ms) on every 10 ms refill —
//! it cannot change its rate in place, which AIMD needs, and it cannot be shared between
//! processes. `schemas::helpers::TokenBucket` accrues tokens from real elapsed time, so a late
//! wake loses nothing.

use super::provider::Provider;
use schemas::TenantId;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::{Pace, SharedState};

/// Now, on tokio's clock (so paused-time tests drive pacing).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Multiplicative decrease on a pace signal.
pub const DECREASE: f64 = 0.7;
/// Multiplicative decrease on a quality (spam) signal.
pub const SHARP_DECREASE: f64 = 0.25;
/// Additive increase per second, as a share of the configured rate.
pub const INCREASE_PER_S: f64 = 0.02;
/// At most one decrease per this long.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// A sender's AIMD state.
struct Aimd {
    configured: f64,
    current: f64,
    last_decrease: Option<Instant>,
    last_update: Instant,
}

impl Aimd {
    /// Additive recovery since the last update (none during the cooldown after a decrease).
    fn recover(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_update).as_secs_f64();
        self.last_update = now;
        if self.current >= self.configured
            || self.last_decrease.is_some_and(|d| now.saturating_duration_since(d) < COOLDOWN)
        {
            return;
        }
        self.current = (self.current + self.configured * INCREASE_PER_S * dt).min(self.configured);
    }
}

/// One sending identity with its pacing state.
pub struct Sender {
    pub id: String,
    /// Its bucket's name in the shared state.
    bucket: String,
    burst: u32,
    aimd: Option<Mutex<Aimd>>,
    stopped: AtomicBool,
    /// Pace signals received (each may or may not have decreased the rate).
    pub pace_signals: AtomicU64,
}

impl Sender {
    /// A sender of `tenant` on `provider`; unpaced without a rate. Its bucket allows `burst`
    /// calls above the rate in any second (at least 1) and starts empty, so a sender streaming
    /// from the start runs at exactly its rate.
    pub fn new(tenant: TenantId, provider: &str, id: impl Into<String>, rate_per_s: Option<u32>, burst: u32) -> Self {
        let id = id.into();
        let now = now();
        let aimd = rate_per_s.filter(|r| *r > 0).map(|rate| {
            Mutex::new(Aimd {
                configured: f64::from(rate),
                current: f64::from(rate),
                last_decrease: None,
                last_update: now,
            })
        });
        Self {
            bucket: format!("pace/{tenant}/{provider}/{id}"),
            id,
            burst: burst.max(1),
            aimd,
            stopped: AtomicBool::new(false),
            pace_signals: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Aimd>> {
        self.aimd.as_ref().map(|p| p.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn is_paced(&self) -> bool {
        self.aimd.is_some()
    }

    /// `(configured, current)` calls per second, if paced.
    pub fn rates(&self) -> Option<(f64, f64)> {
        self.lock().map(|mut p| {
            p.recover(now());
            (p.configured, p.current)
        })
    }

    /// The pace its bucket is taken at now.
    fn pace(&self) -> Option<Pace> {
        self.rates().map(|(_, current)| Pace { rate_per_s: current, burst: self.burst })
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops the sender (until its settings are stored again); returns whether it was live.
    pub fn stop(&self) -> bool {
        !self.stopped.swap(true, Ordering::Relaxed)
    }

    /// The provider said "too fast": decrease the rate by `factor` (once per cooldown).
    /// Returns the new rate when it decreased.
    pub fn slow_down(&self, factor: f64) -> Option<f64> {
        self.pace_signals.fetch_add(1, Ordering::Relaxed);
        let mut p = self.lock()?;
        let now = now();
        if p.last_decrease.is_some_and(|d| now.saturating_duration_since(d) < COOLDOWN) {
            return None;
        }
        let floor = (p.configured * 0.05).max(0.5);
        p.current = (p.current * factor).max(floor);
        p.last_decrease = Some(now);
        p.last_update = now;
        Some(p.current)
    }
}

/// Call slots handed out by [`Route::slots`].
#[derive(Default)]
pub struct Slots {
    /// Senders and how many calls each may make now.
    pub grants: Vec<(Arc<Sender>, u32)>,
    /// When nothing was granted: how long until a slot frees up.
    pub wait: Duration,
    /// Every sender of the route is stopped.
    pub no_sender: bool,
}

impl Slots {
    pub fn granted(&self) -> u32 {
        self.grants.iter().map(|(_, n)| n).sum()
    }
}

/// A tenant's senders for one channel, with the provider they call and the tenant's limit.
pub struct Route {
    pub provider: Arc<dyn Provider>,
    pub senders: Vec<Arc<Sender>>,
    /// The tenant's own limit: its bucket's name and pace.
    tenant: Option<(String, Pace)>,
    next: AtomicUsize,
    /// What the route was built from (kept while unchanged, so pacing state survives reloads).
    pub fingerprint: u64,
    /// The tenant's WhatsApp messaging-tier limit, when this route counts against one.
    pub quota: Option<u64>,
}

impl Route {
    /// `tenant_limit`: the tenant's `(rate, burst)`, if it has a rate limit.
    pub fn new(
        provider: Arc<dyn Provider>,
        senders: Vec<Arc<Sender>>,
        tenant: TenantId,
        tenant_limit: Option<(u32, u32)>,
        fingerprint: u64,
    ) -> Self {
        let tenant = tenant_limit
            .filter(|(rate, _)| *rate > 0)
            .map(|(rate, burst)| (format!("pace/{tenant}"), Pace { rate_per_s: f64::from(rate), burst: burst.max(1) }));
        Self { provider, senders, tenant, next: AtomicUsize::new(0), fingerprint, quota: None }
    }

    /// Whether calls wait for pacing.
    pub fn is_paced(&self) -> bool {
        self.tenant.is_some() || self.senders.iter().any(|s| s.is_paced())
    }

    /// Live senders besides `sender`.
    pub fn has_other_live(&self, sender: &Sender) -> bool {
        self.senders.iter().any(|s| s.id != sender.id && !s.is_stopped())
    }

    /// Up to `want` call slots now, spread over the live senders in rotation (taking their
    /// tokens, and the tenant's). Tokens a sender could not use go back to the tenant bucket.
    pub async fn slots(&self, state: &dyn SharedState, want: u32) -> storage::Result<Slots> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.senders.len();
        let live: Vec<&Arc<Sender>> =
            (0..n).map(|i| &self.senders[(start + i) % n]).filter(|s| !s.is_stopped()).collect();
        if live.is_empty() {
            return Ok(Slots { no_sender: true, ..Slots::default() });
        }
        if want == 0 {
            return Ok(Slots::default());
        }
        let mut budget = want;
        let mut wait = Duration::MAX;
        if let Some((bucket, pace)) = &self.tenant {
            let grant = state.take_tokens(bucket, *pace, want).await?;
            budget = grant.granted;
            if budget == 0 {
                return Ok(Slots { wait: grant.wait, ..Slots::default() });
            }
        }
        let mut grants = Vec::new();
        for sender in live.iter().filter(|s| s.is_paced()) {
            let Some(pace) = sender.pace() else { continue };
            if budget == 0 {
                break;
            }
            let grant = state.take_tokens(&sender.bucket, pace, budget).await?;
            if grant.granted < budget {
                wait = wait.min(grant.wait);
            }
            if grant.granted > 0 {
                grants.push(((*sender).clone(), grant.granted));
                budget -= grant.granted;
            }
        }
        // Unpaced senders share the rest evenly.
        let unpaced: Vec<&&Arc<Sender>> = live.iter().filter(|s| !s.is_paced()).collect();
        for (i, sender) in unpaced.iter().enumerate() {
            let got = budget.div_ceil((unpaced.len() - i) as u32);
            if got > 0 {
                grants.push(((**sender).clone(), got));
                budget -= got;
            }
        }
        if budget > 0 {
            if let Some((bucket, pace)) = &self.tenant {
                state.refund_tokens(bucket, *pace, budget).await?;
            }
        }
        let wait = if grants.is_empty() { wait.min(Duration::from_secs(1)) } else { Duration::ZERO };
        Ok(Slots { grants, wait, no_sender: false })
    }

    /// Gives back slots taken but not used (their messages turned out not to need a call).
    pub async fn refund(&self, state: &dyn SharedState, sender: &Sender, n: u32) -> storage::Result<()> {
        if n == 0 {
            return Ok(());
        }
        if let Some(pace) = sender.pace() {
            state.refund_tokens(&sender.bucket, pace, n).await?;
        }
        if let Some((bucket, pace)) = &self.tenant {
            state.refund_tokens(bucket, *pace, n).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
