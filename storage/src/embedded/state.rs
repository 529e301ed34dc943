//! The embedded [`SharedState`]: in one process, so atomicity is a lock. Durable parts (ids,
//! claims, idempotency records, the quota ledger, stopped senders) live in the embedded store's
//! database; leases, pacing buckets and published campaign statuses are in memory (a restart
//! starts them afresh: leases are free, buckets full — empty, to keep pacing exact — and
//! statuses are read from the catalog until the lifecycle publishes them again).

use super::inflight::{self, InFlightClaims};
use super::keys::Key;
use super::presence::Presence;
use super::{bucket_fingerprints, get, get_message, put, put_message, EmbeddedStore};
use crate::model::*;
use crate::state::{
    claim_applies, fence_admits, lease_step, ClaimWrite, Fence, Lease, LeaseStep, Pace, SharedState, TokenGrant,
};
use crate::{Error, Result};
use async_trait::async_trait;
use schemas::codec;
use schemas::helpers::TokenBucket;
use schemas::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Shared state for the embedded deployment (see the module docs).
pub struct EmbeddedState {
    store: Arc<EmbeddedStore>,
    leases: Mutex<HashMap<String, Lease>>,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    statuses: Mutex<HashMap<(TenantId, CampaignId), CampaignStatus>>,
    /// Lease tokens grow across restarts too (they start from the clock).
    next_token: Mutex<u64>,
}

impl EmbeddedState {
    pub fn new(store: Arc<EmbeddedStore>) -> Self {
        Self {
            store,
            leases: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
            next_token: Mutex::new(now_ms().saturating_mul(1_000)),
        }
    }
}

impl EmbeddedState {
    /// The claim at `key`: in flight (in memory, see [`inflight`]), else from the store. Called
    /// under `cas_lock`.
    fn claim_at(&self, in_flight: &InFlightClaims, presence: &mut Presence, key: &MessageKey) -> Result<Option<Claim>> {
        if let Some(claim) = in_flight.get(key) {
            return Ok(Some(claim.clone()));
        }
        let known = presence.may_exist(key);
        if known != Some(false) {
            if let Some(claim) = get_message(&self.store.claims, key)? {
                return Ok(Some(claim));
            }
            if known.is_none() {
                presence.load(key, || bucket_fingerprints(&self.store.claims, key))?;
            }
        }
        match &self.store.legacy_claims {
            Some(legacy) => get(legacy, &legacy_claim_key(key)),
            None => Ok(None),
        }
    }

    /// One atomic batch of claim compare-and-sets (under `cas_lock`): settled claims are rows of
    /// `claims`, in-flight ones go into group rows ([`inflight`]).
    fn compare_and_put(
        &self,
        in_flight: &mut InFlightClaims,
        presence: &mut Presence,
        writes: &[ClaimWrite],
    ) -> Result<Vec<bool>> {
        let mut batch = self.store.batch();
        let mut plan = inflight::Plan::default();
        let mut applied = Vec::with_capacity(writes.len());
        let mut keys_written = Vec::with_capacity(writes.len());
        for w in writes {
            // Later writes in this batch compare with the batch's own.
            let stored = match plan.get(&w.key) {
                Some(claim) => Some(claim.clone()),
                None => self.claim_at(in_flight, presence, &w.key)?,
            };
            let ok = claim_applies(stored.as_ref(), w);
            if ok {
                if !matches!(w.claim, Claim::InFlight { .. }) {
                    put_message(&mut batch, &self.store.claims, &w.key, &w.claim)?;
                    keys_written.push(w.key);
                }
                plan.write(&w.key, w.claim.clone());
            }
            applied.push(ok);
        }
        let plan = in_flight.plan(plan);
        for (group, members) in &plan.rows {
            match members.is_empty() {
                true => batch.remove(&self.store.inflight, inflight::row_key(*group)),
                false => put(&mut batch, &self.store.inflight, inflight::row_key(*group), members)?,
            }
        }
        // Under `cas_lock`, so no read of these keys can come between this and the commit.
        presence.writing(&keys_written);
        let committed = batch.commit();
        presence.written(&keys_written);
        committed?;
        in_flight.apply(plan);
        Ok(applied)
    }
}

/// Where stores written before claims were keyed by bucket keep them (read-only; see
/// `EmbeddedStore::legacy_claims`).
pub(super) fn legacy_claim_key(k: &MessageKey) -> Vec<u8> {
    Key::new().u64(k.tenant.0).u64(k.campaign.0).u128(k.id.0).build()
}
fn idempotency_key(t: TenantId, scope: &str, key: &str) -> Vec<u8> {
    Key::new().u64(t.0).str(scope).str(key).build()
}
fn ledger_key(t: TenantId) -> Vec<u8> {
    Key::new().u64(t.0).str("ledger").build()
}
fn wait_key(t: TenantId, c: CampaignId) -> Vec<u8> {
    Key::new().u64(t.0).str("wait").u64(c.0).build()
}
fn stopped_key(t: TenantId, provider: &str, sender: &str) -> Vec<u8> {
    Key::new().u64(t.0).str(provider).str(sender).build()
}

/// Now, on tokio's clock (so paused-time tests drive pacing).
fn instant() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Removes a key.
fn remove(store: &EmbeddedStore, ks: &fjall::Keyspace, key: Vec<u8>) -> Result<()> {
    let mut batch = store.batch();
    batch.remove(ks, key);
    Ok(batch.commit()?)
}

#[async_trait]
impl SharedState for EmbeddedState {
    async fn next_id(&self, kind: &'static str) -> Result<u64> {
        let _guard = self.store.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = Key::new().str("seq").str(kind).build();
        let next = get::<u64>(&self.store.meta, &key)?.unwrap_or(1);
        let mut batch = self.store.batch();
        put(&mut batch, &self.store.meta, key, &(next + 1))?;
        batch.commit()?;
        Ok(next)
    }

    async fn get_claims(&self, keys: &[MessageKey]) -> Result<Vec<Option<Claim>>> {
        let _guard = self.store.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let in_flight = self.store.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut presence = self.store.claim_presence.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|k| self.claim_at(&in_flight, &mut presence, k)).collect()
    }

    async fn put_claims(&self, writes: &[ClaimWrite], fence: Option<&Fence>) -> Result<Vec<bool>> {
        if let Some(f) = fence {
            let current = self.leases.lock().unwrap_or_else(|p| p.into_inner()).get(&f.lease).map(|l| l.token);
            if !fence_admits(current, f) {
                return Err(Error::Fenced { lease: f.lease.clone() });
            }
        }
        self.store.within_budget().await;
        let _guard = self.store.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut in_flight = self.store.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut presence = self.store.claim_presence.lock().unwrap_or_else(|p| p.into_inner());
        // On an error nothing was written, and memory changed only after the commit.
        self.compare_and_put(&mut in_flight, &mut presence, writes)
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: u64, now_ms: u64) -> Result<Option<Lease>> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let token = match lease_step(leases.get(name), holder, now_ms) {
            LeaseStep::Renew { token } => token,
            LeaseStep::Refuse => return Ok(None),
            LeaseStep::Take => {
                let mut next = self.next_token.lock().unwrap_or_else(|p| p.into_inner());
                *next += 1;
                *next
            }
        };
        let lease = Lease { name: name.to_string(), holder: holder.to_string(), token, expires_ms: now_ms + ttl_ms };
        leases.insert(name.to_string(), lease.clone());
        Ok(Some(lease))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.get(&lease.name).is_some_and(|l| l.token == lease.token) {
            leases.remove(&lease.name);
        }
        Ok(())
    }

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>> {
        Ok(self.leases.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned())
    }

    async fn take_tokens(&self, bucket: &str, pace: Pace, want: u32) -> Result<TokenGrant> {
        let now = instant();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b =
            buckets.entry(bucket.to_string()).or_insert_with(|| TokenBucket::empty(pace.rate_per_s, pace.burst, now));
        if (b.rate() - pace.rate_per_s).abs() > f64::EPSILON {
            b.set_rate(pace.rate_per_s, now);
        }
        b.set_burst(pace.burst, now);
        let (granted, next) = b.take_up_to(want, now);
        Ok(TokenGrant { granted, wait: next })
    }

    async fn refund_tokens(&self, bucket: &str, _pace: Pace, n: u32) -> Result<()> {
        if let Some(b) = self.buckets.lock().unwrap_or_else(|p| p.into_inner()).get_mut(bucket) {
            b.refund(n);
        }
        Ok(())
    }

    async fn publish_status(&self, tenant: TenantId, campaign: CampaignId, status: CampaignStatus) -> Result<()> {
        self.statuses.lock().unwrap_or_else(|p| p.into_inner()).insert((tenant, campaign), status);
        Ok(())
    }

    async fn campaign_status(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignStatus>> {
        Ok(self.statuses.lock().unwrap_or_else(|p| p.into_inner()).get(&(tenant, campaign)).copied())
    }

    async fn reserve_idempotency(
        &self,
        tenant: TenantId,
        scope: &str,
        key: &str,
        request_hash: &str,
        now_ms: u64,
        lease_ms: u64,
        ttl_ms: u64,
    ) -> Result<Reservation> {
        let _guard = self.store.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let k = idempotency_key(tenant, scope, key);
        let stored = get::<IdempotencyEntry>(&self.store.idempotency, &k)?;
        if let Some(found) = IdempotencyEntry::reservation(stored.as_ref(), request_hash, now_ms, ttl_ms) {
            return Ok(found);
        }
        let entry = IdempotencyEntry::InProgress {
            request_hash: request_hash.to_string(),
            until_ms: now_ms.saturating_add(lease_ms),
        };
        let mut batch = self.store.batch();
        put(&mut batch, &self.store.idempotency, k, &entry)?;
        batch.commit()?;
        Ok(Reservation::Reserved)
    }

    async fn complete_idempotency(
        &self,
        tenant: TenantId,
        scope: &str,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<()> {
        let _guard = self.store.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.store.batch();
        put(
            &mut batch,
            &self.store.idempotency,
            idempotency_key(tenant, scope, key),
            &IdempotencyEntry::Done(record.clone()),
        )?;
        Ok(batch.commit()?)
    }

    async fn release_idempotency(&self, tenant: TenantId, scope: &str, key: &str) -> Result<()> {
        let _guard = self.store.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let k = idempotency_key(tenant, scope, key);
        if matches!(get::<IdempotencyEntry>(&self.store.idempotency, &k)?, Some(IdempotencyEntry::InProgress { .. })) {
            remove(&self.store, &self.store.idempotency, k)?;
        }
        Ok(())
    }

    async fn sweep_idempotency(&self, now_ms: u64, ttl_ms: u64, budget: usize) -> Result<usize> {
        let mut stale = Vec::new();
        for guard in self.store.idempotency.iter() {
            let (k, v) = guard.into_inner()?;
            if codec::decode::<IdempotencyEntry>(&v)?.expired(now_ms, ttl_ms) {
                stale.push(k);
                if stale.len() >= budget {
                    break;
                }
            }
        }
        let _guard = self.store.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.store.batch();
        for k in &stale {
            batch.remove(&self.store.idempotency, k.clone());
        }
        batch.commit()?;
        Ok(stale.len())
    }

    async fn reserve_quota(
        &self,
        tenant: TenantId,
        limit: u64,
        window_ms: u64,
        want: u64,
        now_ms: u64,
    ) -> Result<QuotaGrant> {
        let _guard = self.store.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = ledger_key(tenant);
        let mut ledger: QuotaLedger = get(&self.store.quota, &key)?.unwrap_or_default();
        let grant = ledger.reserve(limit, window_ms, want, now_ms);
        let mut batch = self.store.batch();
        put(&mut batch, &self.store.quota, key, &ledger)?;
        batch.commit()?;
        Ok(grant)
    }

    async fn restamp_quota(&self, tenant: TenantId, n: u64, now_ms: u64) -> Result<()> {
        let _guard = self.store.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = ledger_key(tenant);
        let Some(mut ledger) = get::<QuotaLedger>(&self.store.quota, &key)? else { return Ok(()) };
        ledger.restamp(n, now_ms);
        let mut batch = self.store.batch();
        put(&mut batch, &self.store.quota, key, &ledger)?;
        Ok(batch.commit()?)
    }

    async fn set_quota_wait(&self, tenant: TenantId, campaign: CampaignId, resume_at_ms: Option<u64>) -> Result<()> {
        let key = wait_key(tenant, campaign);
        let mut batch = self.store.batch();
        match resume_at_ms {
            Some(at) => put(&mut batch, &self.store.quota, key, &at)?,
            None => batch.remove(&self.store.quota, key),
        }
        Ok(batch.commit()?)
    }

    async fn get_quota_wait(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<u64>> {
        get(&self.store.quota, &wait_key(tenant, campaign))
    }

    async fn stop_sender(&self, tenant: TenantId, provider: &str, sender: &str) -> Result<()> {
        let mut batch = self.store.batch();
        batch.insert(&self.store.stopped, stopped_key(tenant, provider, sender), codec::encode(&now_ms())?);
        Ok(batch.commit()?)
    }

    async fn stopped_senders(&self, tenant: TenantId) -> Result<Vec<(String, String)>> {
        let prefix = Key::new().u64(tenant.0).build();
        let mut out = Vec::new();
        for guard in self.store.stopped.prefix(&prefix) {
            let key = guard.key()?;
            let mut parts = key[8..].split(|b| *b == 0);
            if let (Some(p), Some(s)) = (parts.next(), parts.next()) {
                out.push((String::from_utf8_lossy(p).into_owned(), String::from_utf8_lossy(s).into_owned()));
            }
        }
        Ok(out)
    }

    async fn clear_stopped(&self, tenant: TenantId, provider: &str) -> Result<()> {
        let prefix = Key::new().u64(tenant.0).str(provider).build();
        let keys = self.store.stopped.prefix(&prefix).map(|g| g.key()).collect::<std::result::Result<Vec<_>, _>>()?;
        let mut batch = self.store.batch();
        for k in keys {
            batch.remove(&self.store.stopped, k);
        }
        Ok(batch.commit()?)
    }

    async fn purge_tenant(&self, tenant: TenantId, _budget: usize) -> Result<bool> {
        // Claims, idempotency records, quota and stopped senders are in the store's database,
        // tenant-first: `Catalog::purge_tenant` removes them. Only memory is left.
        self.statuses.lock().unwrap_or_else(|p| p.into_inner()).retain(|(t, _), _| *t != tenant);
        Ok(true)
    }
}
