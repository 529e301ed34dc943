//! Shared state: what every process of a deployment must see the same way, at once, with
//! compare-and-set where two of them could race. The embedded deployment keeps it in process
//! (durable parts in the embedded store, [`crate::EmbeddedState`]); the distributed one in Redis.
//!
//! | concern | who writes | atomic how (Redis) |
//! |---|---|---|
//! | ids | API, lifecycle | `INCR` |
//! | send claims | deliver | compare-and-set per claim (Lua), fenced by the partition lease |
//! | partition leases | workers | `SET NX PX` / compare token (Lua) |
//! | pacing tokens | deliver | token bucket per sender (Lua); taken in blocks |
//! | campaign control flags | lifecycle | `SET`; read by every stage within 1 s |
//! | idempotency reservations | API | `SET NX PX`, then the stored response |
//! | messaging-tier quota | throttle, deliver | one ledger per tenant (Lua) |
//! | stopped senders | deliver | `SADD` per tenant |
//!
//! It is not: the message log or the catalog (see `crate::traits`).

use crate::model::*;
use crate::Result;
use async_trait::async_trait;
use schemas::*;

/// A partition lease: while its holder keeps renewing it, only the holder works the partition.
/// Its `token` grows with every new holder, so a write fenced with an older token (a worker
/// that lost the lease during a long pause) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub token: u64,
    pub expires_ms: u64,
}

/// The lease a write is made under (see [`SharedState::put_claims`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: u64,
}

/// A claim to write if the stored one is still `expected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimWrite {
    pub key: MessageKey,
    pub expected: Option<Claim>,
    pub claim: Claim,
}

/// A token bucket's limit: `rate_per_s` tokens per second, at most `burst` banked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub rate_per_s: f64,
    pub burst: u32,
}

/// What taking tokens granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrant {
    pub granted: u32,
    /// How long until the next token, if fewer than asked were granted.
    pub wait: std::time::Duration,
}

/// What acquiring a lease does, decided from the stored lease: every backend applies this one
/// rule (the protocol model in `tests/protocol_model.rs` checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// The holder still has it: renew, keeping the token.
    Renew { token: u64 },
    /// Free or expired: take it with a new, higher token.
    Take,
    /// Another holder has it until it expires.
    Refuse,
}

/// The lease rule (see [`LeaseStep`]).
pub fn lease_step(stored: Option<&Lease>, holder: &str, now_ms: u64) -> LeaseStep {
    match stored {
        Some(l) if l.expires_ms > now_ms && l.holder == holder => LeaseStep::Renew { token: l.token },
        Some(l) if l.expires_ms > now_ms => LeaseStep::Refuse,
        _ => LeaseStep::Take,
    }
}

/// Whether a write fenced by `fence` may happen while `current` is the lease's token.
pub fn fence_admits(current: Option<u64>, fence: &Fence) -> bool {
    current == Some(fence.token)
}

/// Whether a claim compare-and-set applies to the stored claim.
pub fn claim_applies(stored: Option<&Claim>, write: &ClaimWrite) -> bool {
    stored == write.expected.as_ref()
}

/// See the module docs.
#[async_trait]
pub trait SharedState: Send + Sync {
    /// A fresh id for a new object of `kind` (tenant, template, audience, campaign): unique
    /// across every process, without a global lock (Redis `INCR`).
    async fn next_id(&self, kind: &'static str) -> Result<u64>;

    async fn get_claims(&self, keys: &[MessageKey]) -> Result<Vec<Option<Claim>>>;
    /// Writes each claim whose stored value is still its `expected` (compare-and-set per
    /// claim); returns which were written. Durable when it returns. With a `fence`, nothing is
    /// written (`Error::Fenced`) unless the fence's token is its lease's current one.
    async fn put_claims(&self, writes: &[ClaimWrite], fence: Option<&Fence>) -> Result<Vec<bool>>;

    /// Takes the lease `name` for `holder` if it is free or expired (a new token), or renews it
    /// if `holder` has it (same token).
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: u64, now_ms: u64) -> Result<Option<Lease>>;
    /// Gives a lease back (only if `lease.token` is still current).
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
    /// The lease `name` as stored (possibly expired), without touching it.
    async fn get_lease(&self, name: &str) -> Result<Option<Lease>>;

    /// Takes up to `want` tokens of `bucket` (refilled at `pace`, on the state's own clock: one
    /// clock for every worker). A new bucket starts empty, so a sender streaming from the start
    /// runs at exactly its rate.
    async fn take_tokens(&self, bucket: &str, pace: Pace, want: u32) -> Result<TokenGrant>;
    /// Gives back tokens taken but not used.
    async fn refund_tokens(&self, bucket: &str, pace: Pace, n: u32) -> Result<()>;

    /// Publishes a campaign's control status (the lifecycle, after its compare-and-set on the
    /// campaign row): every stage sees it within its cache TTL.
    async fn publish_status(&self, tenant: TenantId, campaign: CampaignId, status: CampaignStatus) -> Result<()>;
    /// The published status (None: never published, or forgotten: ask the catalog).
    async fn campaign_status(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignStatus>>;

    /// Reserves an `Idempotency-Key` atomically: of concurrent requests with one key exactly
    /// one gets `Reserved`. A reservation lapses after `lease_ms`; a stored response after
    /// `ttl_ms`.
    #[allow(clippy::too_many_arguments)]
    async fn reserve_idempotency(
        &self,
        tenant: TenantId,
        scope: &str,
        key: &str,
        request_hash: &str,
        now_ms: u64,
        lease_ms: u64,
        ttl_ms: u64,
    ) -> Result<Reservation>;
    /// Stores the response of a reserved key (replayed until it expires).
    async fn complete_idempotency(
        &self,
        tenant: TenantId,
        scope: &str,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<()>;
    /// Gives a reserved key back (its request failed before changing anything).
    async fn release_idempotency(&self, tenant: TenantId, scope: &str, key: &str) -> Result<()>;
    /// Removes expired records and lapsed reservations; how many (Redis: expiry does it).
    async fn sweep_idempotency(&self, now_ms: u64, ttl_ms: u64, budget: usize) -> Result<usize>;

    /// Atomically reserves up to `want` messages of the tenant's rolling-window budget.
    async fn reserve_quota(
        &self,
        tenant: TenantId,
        limit: u64,
        window_ms: u64,
        want: u64,
        now_ms: u64,
    ) -> Result<QuotaGrant>;
    /// Moves `n` counts from the oldest slots to `now_ms` (counted at release, re-counted at
    /// the provider's acceptance, so the window runs from the real send).
    async fn restamp_quota(&self, tenant: TenantId, n: u64, now_ms: u64) -> Result<()>;
    /// Records (Some) or clears (None) that a campaign waits for quota until a time.
    async fn set_quota_wait(&self, tenant: TenantId, campaign: CampaignId, resume_at_ms: Option<u64>) -> Result<()>;
    async fn get_quota_wait(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<u64>>;

    /// Records that the provider stopped a sender (WhatsApp 368): every deliver worker skips it.
    async fn stop_sender(&self, tenant: TenantId, provider: &str, sender: &str) -> Result<()>;
    /// The tenant's stopped senders as `(provider, sender)`.
    async fn stopped_senders(&self, tenant: TenantId) -> Result<Vec<(String, String)>>;
    /// Forgets a provider's stopped senders (its settings were stored again).
    async fn clear_stopped(&self, tenant: TenantId, provider: &str) -> Result<()>;

    /// Removes up to `budget` entries the tenant owns (claims, idempotency, quota, stopped
    /// senders); `true` when nothing is left.
    async fn purge_tenant(&self, tenant: TenantId, budget: usize) -> Result<bool>;
}

/// The runner's partition leases (`pipeline::runner::assign`) on a shared state: the same
/// leases, tokens and rule ([`lease_step`]) as every other lease.
pub struct StateLeases(pub std::sync::Arc<dyn SharedState>);

#[async_trait]
impl pipeline::runner::assign::Leases for StateLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: std::time::Duration) -> pipeline::Result<Option<u64>> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        match self.0.acquire_lease(name, holder, ttl_ms, now_ms()).await {
            Ok(lease) => Ok(lease.map(|l| l.token)),
            Err(e) => Err(pipeline_error(e)),
        }
    }

    async fn live(&self, name: &str) -> pipeline::Result<bool> {
        match self.0.get_lease(name).await {
            Ok(lease) => Ok(lease.is_some_and(|l| l.expires_ms > now_ms())),
            Err(e) => Err(pipeline_error(e)),
        }
    }

    async fn release(&self, name: &str, holder: &str, token: u64) -> pipeline::Result<()> {
        let lease = Lease { name: name.to_string(), holder: holder.to_string(), token, expires_ms: 0 };
        self.0.release_lease(&lease).await.map_err(pipeline_error)
    }
}

/// A shared-state error as the pipeline classes it.
pub fn pipeline_error(e: crate::Error) -> pipeline::Error {
    if e.is_transient() {
        pipeline::Error::Transient(e.to_string())
    } else {
        pipeline::Error::Fatal(e.to_string())
    }
}
