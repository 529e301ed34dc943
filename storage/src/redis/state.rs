//! The [`SharedState`] methods on Redis (layout and durability: the module docs).

use super::scripts::{CAS, PUT_CLAIMS, TOKENS};
use super::{connect, unavailable, Keys, RedisConfig};
use crate::model::*;
use crate::state::{lease_step, ClaimWrite, Fence, Lease, LeaseStep, Pace, SharedState, TokenGrant};
use crate::{Error, Result};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use schemas::codec;
use schemas::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Shared state in Redis (see the module docs).
pub struct RedisState {
    conn: ConnectionManager,
    keys: Keys,
    config: RedisConfig,
}

/// What a read-decide-write step does to the value.
enum Write<T> {
    Keep,
    Put(T),
    Delete,
}

impl RedisState {
    /// A handle; connects on first use (see [`super::connect`]).
    pub fn new(config: RedisConfig) -> Result<Self> {
        let conn = connect(&config)?;
        Ok(Self { conn, keys: Keys { prefix: config.prefix.clone() }, config })
    }

    /// Whether Redis answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.conn().get(key).await.map_err(unavailable)
    }

    /// Compare-and-set of one value (see [`CAS`]); `px` 0: no expiry.
    async fn cas(&self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>, px: u64) -> Result<bool> {
        let written: i64 = CAS
            .key(key)
            .arg(expected.unwrap_or_default())
            .arg(new.unwrap_or_default())
            .arg(px)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    /// Reads a value, lets `decide` choose what to write, and writes it if nobody wrote in
    /// between (else reads again): the Rust rule, applied atomically.
    async fn update<T, R>(
        &self,
        key: &str,
        px: u64,
        mut decide: impl FnMut(Option<T>) -> Result<(Write<T>, R)>,
    ) -> Result<R>
    where
        T: Serialize + DeserializeOwned,
    {
        let mut backoff = Duration::from_millis(1);
        loop {
            let raw = self.get_raw(key).await?;
            let stored = raw.as_deref().map(codec::decode::<T>).transpose()?;
            let (write, answer) = decide(stored)?;
            let new = match write {
                Write::Keep => return Ok(answer),
                Write::Put(v) => Some(codec::encode(&v)?),
                Write::Delete => None,
            };
            if self.cas(key, raw.as_deref(), new.as_deref(), px).await? {
                return Ok(answer);
            }
            // Lost a race with another writer: read again, briefly backing off.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    async fn tokens(&self, bucket: &str, pace: Pace, n: u32, mode: &str) -> Result<(u32, u64)> {
        let (granted, wait_us): (i64, i64) = TOKENS
            .key(self.keys.bucket(bucket))
            .arg(pace.rate_per_s)
            .arg(pace.burst)
            .arg(n)
            .arg(mode)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((granted.clamp(0, i64::from(u32::MAX)) as u32, wait_us.max(0) as u64))
    }

    /// Keys matching `pattern`, up to `limit` (a full `SCAN` pass when fewer exist); whether
    /// the pass completed.
    async fn scan(&self, pattern: &str, limit: usize) -> Result<(Vec<String>, bool)> {
        let mut conn = self.conn();
        let mut cursor = 0u64;
        let mut found = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            found.extend(keys);
            if next == 0 {
                return Ok((found, true));
            }
            if found.len() >= limit {
                return Ok((found, false));
            }
            cursor = next;
        }
    }
}

/// A lease as stored: `token:expires_ms:holder` (the claims script reads the token prefix).
fn encode_lease(l: &Lease) -> String {
    format!("{}:{}:{}", l.token, l.expires_ms, l.holder)
}

fn decode_lease(name: &str, raw: &[u8]) -> Result<Lease> {
    let text = std::str::from_utf8(raw).map_err(|_| corrupt(name))?;
    let mut parts = text.splitn(3, ':');
    let (Some(token), Some(expires), Some(holder)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt(name));
    };
    Ok(Lease {
        name: name.to_string(),
        holder: holder.to_string(),
        token: token.parse().map_err(|_| corrupt(name))?,
        expires_ms: expires.parse().map_err(|_| corrupt(name))?,
    })
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(schemas::Error::Decode(format!("redis value of {what} is not a lease")))
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

#[async_trait]
impl SharedState for RedisState {
    async fn next_id(&self, kind: &'static str) -> Result<u64> {
        self.conn().incr(self.keys.id(kind), 1u64).await.map_err(unavailable)
    }

    async fn get_claims(&self, keys: &[MessageKey]) -> Result<Vec<Option<Claim>>> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.hget(self.keys.claims(k.tenant.0, k.campaign.0, k.bucket), k.id.0.to_be_bytes().as_slice());
        }
        let raw: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        raw.iter().map(|r| r.as_deref().map(codec::decode::<Claim>).transpose().map_err(Error::from)).collect()
    }

    async fn put_claims(&self, writes: &[ClaimWrite], fence: Option<&Fence>) -> Result<Vec<bool>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = PUT_CLAIMS.prepare_invoke();
        match fence {
            Some(f) => call.key(self.keys.lease(&f.lease)).arg(f.token.to_string()),
            None => call.key(self.keys.lease_seq()).arg(""),
        };
        call.arg(millis(self.config.claim_ttl));
        for w in writes {
            call.key(self.keys.claims(w.key.tenant.0, w.key.campaign.0, w.key.bucket));
            call.arg(w.key.id.0.to_be_bytes().as_slice());
            call.arg(w.expected.as_ref().map(codec::encode).transpose()?.unwrap_or_default());
            call.arg(codec::encode(&w.claim)?);
        }
        let applied: Vec<i64> = call.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        if applied.first() == Some(&-1) {
            let lease = fence.map(|f| f.lease.clone()).unwrap_or_default();
            return Err(Error::Fenced { lease });
        }
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: u64, now_ms: u64) -> Result<Option<Lease>> {
        let key = self.keys.lease(name);
        loop {
            let raw = self.get_raw(&key).await?;
            let stored = raw.as_deref().map(|r| decode_lease(name, r)).transpose()?;
            let token = match lease_step(stored.as_ref(), holder, now_ms) {
                LeaseStep::Refuse => return Ok(None),
                LeaseStep::Renew { token } => token,
                LeaseStep::Take => self.conn().incr(self.keys.lease_seq(), 1u64).await.map_err(unavailable)?,
            };
            let lease =
                Lease { name: name.to_string(), holder: holder.to_string(), token, expires_ms: now_ms + ttl_ms };
            // The key outlives the lease (it only collects abandoned leases): expiry is
            // decided by `expires_ms`, on the callers' clocks.
            let px = ttl_ms.saturating_mul(2).max(1);
            if self.cas(&key, raw.as_deref(), Some(encode_lease(&lease).as_bytes()), px).await? {
                return Ok(Some(lease));
            }
        }
    }

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>> {
        let raw = self.get_raw(&self.keys.lease(name)).await?;
        raw.as_deref().map(|r| decode_lease(name, r)).transpose()
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let key = self.keys.lease(&lease.name);
        let Some(raw) = self.get_raw(&key).await? else { return Ok(()) };
        if decode_lease(&lease.name, &raw)?.token == lease.token {
            // Lost race: someone renewed or took it in between, and then it is not ours.
            self.cas(&key, Some(&raw), None, 0).await?;
        }
        Ok(())
    }

    async fn take_tokens(&self, bucket: &str, pace: Pace, want: u32) -> Result<TokenGrant> {
        let (granted, wait_us) = self.tokens(bucket, pace, want, "take").await?;
        Ok(TokenGrant { granted, wait: Duration::from_micros(wait_us) })
    }

    async fn refund_tokens(&self, bucket: &str, pace: Pace, n: u32) -> Result<()> {
        self.tokens(bucket, pace, n, "refund").await.map(drop)
    }

    async fn publish_status(&self, tenant: TenantId, campaign: CampaignId, status: CampaignStatus) -> Result<()> {
        let value = codec::encode(&status)?;
        let ttl = millis(self.config.claim_ttl);
        self.conn().pset_ex(self.keys.status(tenant.0, campaign.0), value, ttl).await.map_err(unavailable)
    }

    async fn campaign_status(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignStatus>> {
        let raw = self.get_raw(&self.keys.status(tenant.0, campaign.0)).await?;
        Ok(raw.as_deref().map(codec::decode).transpose()?)
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
        let k = self.keys.idempotency(tenant.0, scope, key);
        self.update(&k, ttl_ms.max(lease_ms).max(1), |stored: Option<IdempotencyEntry>| {
            Ok(match IdempotencyEntry::reservation(stored.as_ref(), request_hash, now_ms, ttl_ms) {
                Some(found) => (Write::Keep, found),
                None => {
                    let until_ms = now_ms.saturating_add(lease_ms);
                    let entry = IdempotencyEntry::InProgress { request_hash: request_hash.to_string(), until_ms };
                    (Write::Put(entry), Reservation::Reserved)
                }
            })
        })
        .await
    }

    async fn complete_idempotency(
        &self,
        tenant: TenantId,
        scope: &str,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<()> {
        let value = codec::encode(&IdempotencyEntry::Done(record.clone()))?;
        let ttl = millis(self.config.idempotency_ttl);
        self.conn().pset_ex(self.keys.idempotency(tenant.0, scope, key), value, ttl).await.map_err(unavailable)
    }

    async fn release_idempotency(&self, tenant: TenantId, scope: &str, key: &str) -> Result<()> {
        let k = self.keys.idempotency(tenant.0, scope, key);
        self.update(&k, 0, |stored: Option<IdempotencyEntry>| {
            Ok(match stored {
                Some(IdempotencyEntry::InProgress { .. }) => (Write::Delete, ()),
                _ => (Write::Keep, ()),
            })
        })
        .await
    }

    async fn sweep_idempotency(&self, now_ms: u64, ttl_ms: u64, budget: usize) -> Result<usize> {
        // Key expiry removes records on Redis's clock; this removes what has expired on the
        // caller's (the same rule as every backend), which matters only when they differ.
        let (keys, _) = self.scan(&self.keys.idempotency_pattern(), budget).await?;
        let mut removed = 0;
        for k in keys.into_iter().take(budget) {
            let gone = self
                .update(&k, 0, |stored: Option<IdempotencyEntry>| {
                    Ok(match stored {
                        Some(e) if e.expired(now_ms, ttl_ms) => (Write::Delete, true),
                        _ => (Write::Keep, false),
                    })
                })
                .await?;
            removed += usize::from(gone);
        }
        Ok(removed)
    }

    async fn reserve_quota(
        &self,
        tenant: TenantId,
        limit: u64,
        window_ms: u64,
        want: u64,
        now_ms: u64,
    ) -> Result<QuotaGrant> {
        let px = window_ms.saturating_mul(2).max(1);
        self.update(&self.keys.quota(tenant.0), px, |stored: Option<QuotaLedger>| {
            let mut ledger = stored.unwrap_or_default();
            let grant = ledger.reserve(limit, window_ms, want, now_ms);
            Ok((Write::Put(ledger), grant))
        })
        .await
    }

    async fn restamp_quota(&self, tenant: TenantId, n: u64, now_ms: u64) -> Result<()> {
        let key = self.keys.quota(tenant.0);
        // Keep the key's remaining life: restamping moves counts forward by less than a window.
        let px: i64 = self.conn().pttl(&key).await.map_err(unavailable)?;
        if px <= 0 {
            return Ok(());
        }
        self.update(&key, px as u64 + 1, |stored: Option<QuotaLedger>| {
            Ok(match stored {
                Some(mut ledger) => {
                    ledger.restamp(n, now_ms);
                    (Write::Put(ledger), ())
                }
                None => (Write::Keep, ()),
            })
        })
        .await
    }

    async fn set_quota_wait(&self, tenant: TenantId, campaign: CampaignId, resume_at_ms: Option<u64>) -> Result<()> {
        let key = self.keys.wait(tenant.0, campaign.0);
        match resume_at_ms {
            Some(at) => self.conn().set(key, at).await.map_err(unavailable),
            None => self.conn().del(key).await.map_err(unavailable),
        }
    }

    async fn get_quota_wait(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<u64>> {
        self.conn().get(self.keys.wait(tenant.0, campaign.0)).await.map_err(unavailable)
    }

    async fn stop_sender(&self, tenant: TenantId, provider: &str, sender: &str) -> Result<()> {
        self.conn().sadd(self.keys.stopped(tenant.0), format!("{provider}\0{sender}")).await.map_err(unavailable)
    }

    async fn stopped_senders(&self, tenant: TenantId) -> Result<Vec<(String, String)>> {
        let members: Vec<String> = self.conn().smembers(self.keys.stopped(tenant.0)).await.map_err(unavailable)?;
        Ok(members
            .into_iter()
            .filter_map(|m| m.split_once('\0').map(|(p, s)| (p.to_string(), s.to_string())))
            .collect())
    }

    async fn clear_stopped(&self, tenant: TenantId, provider: &str) -> Result<()> {
        let key = self.keys.stopped(tenant.0);
        let members: Vec<String> = self.conn().smembers(&key).await.map_err(unavailable)?;
        let prefix = format!("{provider}\0");
        let gone: Vec<&String> = members.iter().filter(|m| m.starts_with(&prefix)).collect();
        if !gone.is_empty() {
            self.conn().srem::<_, _, ()>(&key, gone).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn purge_tenant(&self, tenant: TenantId, budget: usize) -> Result<bool> {
        let budget = budget.max(1);
        let (keys, complete) = self.scan(&format!("{}*", self.keys.tenant(tenant.0)), budget).await?;
        for chunk in keys[..keys.len().min(budget)].chunks(500) {
            self.conn().del::<_, ()>(chunk).await.map_err(unavailable)?;
        }
        Ok(complete && keys.len() <= budget)
    }
}
