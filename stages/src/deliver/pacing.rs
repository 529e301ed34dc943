//! Senders and their pacing: a `leaky-bucket` limiter per sender, acquired right before each
//! provider call, so a sender's calls never exceed `rate` in any second beyond its `burst`.

use super::provider::Provider;
use crate::SharedStore;
use leaky_bucket::RateLimiter;
use schemas::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One sending identity (a WhatsApp phone number id, an SMS from-number, ...).
pub struct Sender {
    pub id: String,
    pub provider: Arc<dyn Provider>,
    pub rate_per_s: Option<u32>,
    pub burst: u32,
    limiter: Option<RateLimiter>,
}

/// Refill `refill` tokens every `interval_ms` so that `refill * 1000 / interval_ms == rate`
/// exactly, preferring short intervals (smoother pacing).
fn refill_schedule(rate: u32) -> (u64, usize) {
    for interval_ms in [10u64, 20, 25, 40, 50, 100, 125, 200, 250, 500] {
        if (u64::from(rate) * interval_ms) % 1000 == 0 {
            return (interval_ms, (u64::from(rate) * interval_ms / 1000) as usize);
        }
    }
    (1000, rate as usize)
}

impl Sender {
    pub fn new(id: impl Into<String>, provider: Arc<dyn Provider>, rate_per_s: Option<u32>, burst: u32) -> Self {
        let limiter = rate_per_s.filter(|r| *r > 0).map(|rate| {
            let (interval_ms, refill) = refill_schedule(rate);
            // The bucket's capacity plus one refill is what can go out back-to-back; keep that
            // within the configured burst so any 1 s window holds at most rate + burst calls.
            let max = (burst as usize).saturating_sub(refill).max(1);
            RateLimiter::builder()
                .initial(max)
                .max(max)
                .refill(refill)
                .interval(Duration::from_millis(interval_ms))
                .fair(true)
                .build()
        });
        Self { id: id.into(), provider, rate_per_s, burst, limiter }
    }

    /// Waits for this sender's next call slot.
    pub async fn pace(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.acquire_one().await;
        }
    }
}

/// Picks senders per tenant. The embedded default gives each tenant one sender on the default
/// provider, paced by the tenant's `rate_limit_per_s` and `burst`.
pub struct Senders {
    store: SharedStore,
    default_provider: Arc<dyn Provider>,
    cache: Mutex<HashMap<TenantId, (Arc<Sender>, Instant)>>,
    ttl: Duration,
}

impl Senders {
    pub fn new(store: SharedStore, default_provider: Arc<dyn Provider>) -> Self {
        Self { store, default_provider, cache: Mutex::new(HashMap::new()), ttl: Duration::from_secs(30) }
    }

    pub async fn for_tenant(&self, tenant: TenantId) -> crate::Result<Arc<Sender>> {
        if let Some((sender, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&tenant) {
            if at.elapsed() < self.ttl {
                return Ok(sender.clone());
            }
        }
        let settings = self.store.get_tenant(tenant).await?;
        let (rate, burst) = settings.map(|t| (t.rate_limit_per_s, t.burst)).unwrap_or((None, 0));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Keep the existing limiter (its token state) while the settings are unchanged.
        if let Some((sender, at)) = cache.get_mut(&tenant) {
            if sender.rate_per_s == rate && sender.burst == burst {
                *at = Instant::now();
                return Ok(sender.clone());
            }
        }
        let sender = Arc::new(Sender::new(format!("tenant-{tenant}"), self.default_provider.clone(), rate, burst));
        cache.insert(tenant, (sender.clone(), Instant::now()));
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_schedule_is_exact() {
        for rate in [1u32, 7, 80, 999, 1000, 2000, 12_345] {
            let (interval, refill) = refill_schedule(rate);
            assert_eq!(refill as u64 * 1000 / interval, u64::from(rate), "rate {rate}");
            assert_eq!(refill as u64 * 1000 % interval, 0, "rate {rate}");
        }
        assert_eq!(refill_schedule(80), (25, 2));
        assert_eq!(refill_schedule(2000), (10, 20));
    }
}
