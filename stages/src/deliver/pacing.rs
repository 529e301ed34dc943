//! Senders and their pacing at call time.
//!
//! A [`Sender`] is one sending identity (a WhatsApp phone number id, an SMS from-number, an
//! email from-address). Each has its own token bucket, taken right before each provider call,
//! so its calls never exceed `rate` in any second beyond its `burst`; a [`Route`] (a tenant's
//! senders for one channel) hands each call to the sender that can go soonest, and a tenant
//! bucket above all routes holds the tenant's own limit.
//!
//! **Adaptive (AIMD).** When the provider says a sender is too fast (WhatsApp 130429, 80007, 4,
//! HTTP 429) the sender's rate is multiplied by [`DECREASE`] (by [`SHARP_DECREASE`] on the
//! 131048 spam limit) at most once per [`COOLDOWN`] — the calls already in flight answer
//! with the same signal — then grows back by [`INCREASE_PER_S`] of the configured rate per
//! second, never above it. A stopped sender (WhatsApp 368) takes no more calls.
//!
//! Why not the `leaky-bucket` crate (the stack's first choice): measured, it paced a 2,000/s
//! sender at 1,785/s — after each timed wake it restarts its refill interval from "now"
//! (leaky-bucket 1.1.2, lib.rs:1720), losing the timer's lateness (~1 ms) on every 10 ms refill —
//! and it cannot change its rate in place, which AIMD needs. This bucket accrues tokens from
//! real elapsed time, so a late wake loses nothing; callers queue FIFO on the route.

use super::provider::Provider;
use crate::throttle::TokenBucket;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

struct Pace {
    bucket: TokenBucket,
    configured: f64,
    last_decrease: Option<Instant>,
    last_update: Instant,
}

impl Pace {
    /// Additive recovery since the last update (none during the cooldown after a decrease).
    fn recover(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_update).as_secs_f64();
        self.last_update = now;
        let rate = self.bucket.rate();
        if rate >= self.configured || self.last_decrease.is_some_and(|d| now.saturating_duration_since(d) < COOLDOWN) {
            return;
        }
        let next = (rate + self.configured * INCREASE_PER_S * dt).min(self.configured);
        self.bucket.set_rate(next, now);
    }
}

/// One sending identity with its pacing state.
pub struct Sender {
    pub id: String,
    pace: Option<Mutex<Pace>>,
    stopped: AtomicBool,
    /// Pace signals received (each may or may not have decreased the rate).
    pub pace_signals: AtomicU64,
}

impl Sender {
    pub fn new(id: impl Into<String>, rate_per_s: Option<u32>, burst: u32) -> Self {
        let now = now();
        // Capacity `burst` (at least 1): any 1 s window holds at most rate + burst calls. It
        // starts empty: a sender streaming from the start then runs at exactly its rate, so
        // calls arriving at the provider a few ms apart from when they left never add up to
        // more than the provider's rate + burst; the burst is only for resuming after idling.
        let pace = rate_per_s.filter(|r| *r > 0).map(|rate| {
            Mutex::new(Pace {
                bucket: TokenBucket::empty(rate, burst.max(1), now),
                configured: f64::from(rate),
                last_decrease: None,
                last_update: now,
            })
        });
        Self { id: id.into(), pace, stopped: AtomicBool::new(false), pace_signals: AtomicU64::new(0) }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Pace>> {
        self.pace.as_ref().map(|p| p.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn is_paced(&self) -> bool {
        self.pace.is_some()
    }

    /// `(configured, current)` calls per second, if paced.
    pub fn rates(&self) -> Option<(f64, f64)> {
        self.lock().map(|p| (p.configured, p.bucket.rate()))
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops the sender for good (until its settings are re-`PUT`); returns whether it was live.
    pub fn stop(&self) -> bool {
        !self.stopped.swap(true, Ordering::Relaxed)
    }

    /// How long until this sender may call (zero: now).
    fn wait(&self, now: Instant) -> Duration {
        match self.lock() {
            Some(mut p) => {
                p.recover(now);
                p.bucket.wait(now)
            }
            None => Duration::ZERO,
        }
    }

    fn take(&self, now: Instant) {
        if let Some(mut p) = self.lock() {
            let _ = p.bucket.take(1, now);
        }
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
        let next = (p.bucket.rate() * factor).max(floor);
        p.bucket.set_rate(next, now);
        p.last_decrease = Some(now);
        p.last_update = now;
        Some(next)
    }
}

/// A tenant's senders for one channel, with the provider they call and the tenant's limit.
pub struct Route {
    pub provider: Arc<dyn Provider>,
    pub senders: Vec<Arc<Sender>>,
    tenant: Option<Arc<Mutex<TokenBucket>>>,
    /// FIFO turn for callers waiting on pacing.
    turn: tokio::sync::Mutex<()>,
    next: AtomicUsize,
    /// What the route was built from (kept while unchanged, so pacing state survives reloads).
    pub fingerprint: u64,
    /// The tenant's WhatsApp messaging-tier limit, when this route counts against one.
    pub quota: Option<u64>,
}

impl Route {
    pub fn new(
        provider: Arc<dyn Provider>,
        senders: Vec<Arc<Sender>>,
        tenant: Option<Arc<Mutex<TokenBucket>>>,
        fingerprint: u64,
    ) -> Self {
        Self {
            provider,
            senders,
            tenant,
            turn: tokio::sync::Mutex::new(()),
            next: AtomicUsize::new(0),
            fingerprint,
            quota: None,
        }
    }

    /// Whether calls wait for pacing (a paced batch can take seconds; an unpaced one does not).
    pub fn is_paced(&self) -> bool {
        self.tenant.is_some() || self.senders.iter().any(|s| s.is_paced())
    }

    /// Live senders besides `sender`.
    pub fn has_other_live(&self, sender: &Sender) -> bool {
        self.senders.iter().any(|s| s.id != sender.id && !s.is_stopped())
    }

    /// Waits for the next call slot and returns the sender to use; `None` when every sender of
    /// the route is stopped.
    pub async fn acquire(&self) -> Option<Arc<Sender>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if !self.is_paced() {
            // Nothing to wait for: no turn to take, the next live sender in rotation goes.
            let n = self.senders.len();
            return (0..n).map(|i| &self.senders[(start + i) % n]).find(|s| !s.is_stopped()).cloned();
        }
        let _turn = self.turn.lock().await;
        loop {
            let now = now();
            let n = self.senders.len();
            let (wait, sender) = (0..n)
                .map(|i| &self.senders[(start + i) % n.max(1)])
                .filter(|s| !s.is_stopped())
                .map(|s| (s.wait(now), s))
                .min_by_key(|(w, _)| *w)?;
            let tenant_wait = match &self.tenant {
                Some(b) => b.lock().unwrap_or_else(|e| e.into_inner()).wait(now),
                None => Duration::ZERO,
            };
            let wait = wait.max(tenant_wait);
            if wait.is_zero() {
                sender.take(now);
                if let Some(b) = &self.tenant {
                    let _ = b.lock().unwrap_or_else(|e| e.into_inner()).take(1, now);
                }
                return Some(sender.clone());
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::provider::SendResult;
    use async_trait::async_trait;
    use schemas::RenderedMessage;

    struct Nobody;
    #[async_trait]
    impl Provider for Nobody {
        fn name(&self) -> &str {
            "nobody"
        }
        async fn send(&self, _: &str, _: &RenderedMessage) -> SendResult {
            SendResult::Accepted { provider_message_id: String::new() }
        }
    }

    fn max_window(calls: &[Duration]) -> usize {
        (0..calls.len())
            .map(|i| calls[i..].iter().take_while(|t| **t < calls[i] + Duration::from_secs(1)).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn paces_at_rate_plus_burst_without_drift() {
        let route = Route::new(Arc::new(Nobody), vec![Arc::new(Sender::new("s", Some(2_000), 200))], None, 0);
        let start = tokio::time::Instant::now();
        let mut calls = Vec::new();
        while start.elapsed() < Duration::from_secs(5) {
            route.acquire().await.unwrap();
            calls.push(start.elapsed());
        }
        assert!(max_window(&calls) <= 2_200, "{} calls in one second", max_window(&calls));
        // 5 s at 2,000/s; a drifting pacer falls well short of this.
        assert!(calls.len() >= 9_990, "only {} calls in 5 s", calls.len());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn several_senders_add_up_and_stopped_ones_are_skipped() {
        let a = Arc::new(Sender::new("a", Some(50), 5));
        let b = Arc::new(Sender::new("b", Some(30), 3));
        let route = Route::new(Arc::new(Nobody), vec![a.clone(), b.clone()], None, 0);
        let start = tokio::time::Instant::now();
        let mut by = std::collections::HashMap::<String, u32>::new();
        while start.elapsed() < Duration::from_secs(10) {
            *by.entry(route.acquire().await.unwrap().id.clone()).or_default() += 1;
        }
        assert!((498..=506).contains(&by["a"]) && (298..=304).contains(&by["b"]), "{by:?}");
        assert!(b.stop());
        assert!(!route.has_other_live(&a));
        assert_eq!(route.acquire().await.unwrap().id, "a");
        a.stop();
        assert!(route.acquire().await.is_none());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn tenant_limit_holds_above_senders() {
        let tenant = Arc::new(Mutex::new(TokenBucket::new(40, 4, now())));
        let senders = vec![Arc::new(Sender::new("a", Some(80), 8)), Arc::new(Sender::new("b", Some(80), 8))];
        let route = Route::new(Arc::new(Nobody), senders, Some(tenant), 0);
        let start = tokio::time::Instant::now();
        let mut calls = Vec::new();
        while start.elapsed() < Duration::from_secs(5) {
            route.acquire().await.unwrap();
            calls.push(start.elapsed());
        }
        assert!(max_window(&calls) <= 44, "{}", max_window(&calls));
    }

    #[test]
    fn aimd_decreases_once_per_cooldown_and_recovers_additively() {
        let sender = Sender::new("s", Some(80), 8);
        assert_eq!(sender.slow_down(DECREASE), Some(56.0));
        assert_eq!(sender.slow_down(DECREASE), None, "in-flight signals within the cooldown count once");
        let (configured, current) = sender.rates().unwrap();
        assert_eq!((configured, current), (80.0, 56.0));
        {
            let mut p = sender.lock().unwrap();
            let later = Instant::now() + Duration::from_secs(2);
            p.last_decrease = Some(Instant::now() - COOLDOWN);
            p.recover(later);
            // Up to 2 s × 1.6/s of recovery.
            assert!(p.bucket.rate() > 56.0 && p.bucket.rate() <= 59.3, "{}", p.bucket.rate());
            p.recover(later + Duration::from_secs(60));
            assert_eq!(p.bucket.rate(), 80.0, "never above the configured rate");
        }
        assert!(Sender::new("u", None, 0).slow_down(DECREASE).is_none(), "unpaced senders have no rate to cut");
    }
}
