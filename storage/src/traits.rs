//! Store traits. Async so a network store (ScyllaDB) implements them without blocking; held as
//! `Arc<dyn ...>` by the stages.

use crate::model::*;
use crate::Result;
use async_trait::async_trait;
use schemas::*;

/// Tenants, templates, audiences with their recipients, suppressions, campaigns, checkpoints.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// A fresh id for a new object of `kind` (tenant, template, audience, campaign).
    async fn next_id(&self, kind: &'static str) -> Result<u64>;

    /// Writes a tenant. Refuses (`Error::Invalid`) limits outside the platform's bounds
    /// ([`Tenant::check_limits`]), whoever the caller is.
    async fn put_tenant(&self, tenant: &Tenant) -> Result<()>;
    /// The tenant in any state (deleted and purged tenants keep a tombstone row).
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    /// Every tenant row, tombstones included.
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Removes up to `budget` rows the tenant owns in every table (templates, audiences and
    /// recipients, suppressions, campaigns with their checkpoints, counters, message log,
    /// provider-id index, claims and DLQ, provider settings and sender index entries, quota,
    /// idempotency records), never its tenant row. `true` when nothing is left.
    async fn purge_tenant(&self, id: TenantId, budget: usize) -> Result<bool>;

    async fn put_template(&self, template: &Template) -> Result<()>;
    async fn get_template(&self, tenant: TenantId, id: TemplateId) -> Result<Option<Template>>;
    async fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>>;
    async fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<bool>;

    async fn put_audience(&self, audience: &Audience) -> Result<()>;
    async fn get_audience(&self, tenant: TenantId, id: AudienceId) -> Result<Option<Audience>>;
    async fn list_audiences(&self, tenant: TenantId) -> Result<Vec<Audience>>;
    /// Appends recipients (ids assigned densely, duplicates by address skipped and counted).
    async fn add_recipients(
        &self,
        tenant: TenantId,
        audience: AudienceId,
        recipients: Vec<NewRecipient>,
    ) -> Result<AddedRecipients>;
    /// Up to `limit` recipients with id ≥ `from`, in id order (a range scan over buckets).
    async fn read_recipients(
        &self,
        tenant: TenantId,
        audience: AudienceId,
        from: RecipientId,
        limit: usize,
    ) -> Result<Vec<Recipient>>;

    async fn put_suppression(&self, tenant: TenantId, address: &str) -> Result<()>;
    async fn remove_suppression(&self, tenant: TenantId, address: &str) -> Result<bool>;
    /// For each address, whether it is suppressed for the tenant.
    async fn suppressed(&self, tenant: TenantId, addresses: &[&str]) -> Result<Vec<bool>>;
    /// Up to `limit` suppressed addresses after `after` (exclusive), in address order.
    async fn list_suppressions(&self, tenant: TenantId, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Reserves an `Idempotency-Key` atomically (one compare-and-set: CQL `INSERT ... IF NOT
    /// EXISTS`, Redis `SET NX PX`): of concurrent requests with one key exactly one gets
    /// `Reserved`. A reservation lapses after `lease_ms`; a stored response after `ttl_ms`.
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
    /// Removes expired records and lapsed reservations; how many.
    async fn sweep_idempotency(&self, now_ms: u64, ttl_ms: u64, budget: usize) -> Result<usize>;

    /// Creates a campaign (a fresh id). Status changes go through [`update_campaign`].
    ///
    /// [`update_campaign`]: CatalogStore::update_campaign
    async fn put_campaign(&self, campaign: &Campaign) -> Result<()>;
    /// Compare-and-set: writes `campaign` with version `expected_version + 1` if the stored
    /// campaign still has `expected_version` (a CQL lightweight transaction on the control
    /// path, never per message). Whether it was written; on `false` nothing changed.
    async fn update_campaign(&self, campaign: &Campaign, expected_version: u64) -> Result<bool>;
    async fn get_campaign(&self, tenant: TenantId, id: CampaignId) -> Result<Option<Campaign>>;
    async fn list_campaigns(&self, tenant: TenantId) -> Result<Vec<Campaign>>;

    async fn get_checkpoint(&self, tenant: TenantId, campaign: CampaignId) -> Result<ChunkCheckpoint>;
    /// Durable when it returns (the chunk stage resumes from it after a crash).
    async fn put_checkpoint(&self, tenant: TenantId, campaign: CampaignId, checkpoint: ChunkCheckpoint) -> Result<()>;
}

/// The message log, its provider-id index, campaign counters and DLQ entries.
#[async_trait]
pub trait MessageLog: Send + Sync {
    async fn get_messages(&self, keys: &[MessageKey]) -> Result<Vec<Option<MessageRecord>>>;
    /// Resolves provider message ids of `provider` to the keys of `tenant`'s messages. The
    /// index is scoped by tenant: a receipt can only ever resolve to a message of the tenant
    /// that signed it, and one tenant's acceptance never replaces another tenant's entry.
    async fn lookup_provider_ids(
        &self,
        tenant: TenantId,
        provider: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<MessageKey>>>;
    async fn get_counters(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignCounters>>;
    /// Writes rows, index entries, counters and DLQ entries; durable when it returns.
    async fn apply(&self, batch: LogBatch) -> Result<()>;
    /// Up to `limit` rows of a campaign after `after` (exclusive), in (bucket, message id) order.
    async fn scan_messages(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after: Option<(u32, MessageId)>,
        limit: usize,
    ) -> Result<Vec<(MessageKey, MessageRecord)>>;
    /// Removes DLQ entries (after a redrive).
    async fn remove_dead_letters(&self, keys: &[MessageKey]) -> Result<()>;
    /// Up to `limit` DLQ entries of a campaign after `after` (exclusive).
    async fn scan_dlq(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<DlqEntry>>;
}

/// Send claims: the no-duplicate guard in front of every provider call.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    async fn get_claims(&self, keys: &[MessageKey]) -> Result<Vec<Option<Claim>>>;
    /// Records claims; durable (survives a process kill) when it returns.
    async fn put_claims(&self, claims: &[(MessageKey, Claim)]) -> Result<()>;
}

/// Tenant provider settings (secrets sealed by the caller), the sender → tenant index used to
/// route provider webhooks, and the messaging-tier quota.
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// Stores a tenant's provider settings and indexes its globally unique senders and its
    /// verify token (replacing its old entries). Atomic: when a global sender
    /// ([`ProviderKind::senders_are_global`]) belongs to another tenant nothing is written and
    /// the answer is `Error::SenderTaken` (CQL: `INSERT ... IF NOT EXISTS` per sender).
    async fn put_provider(&self, config: &ProviderConfig) -> Result<()>;
    async fn get_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>>;
    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderConfig>>;
    async fn delete_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool>;
    /// The tenant whose `kind` provider has a sender with this id (global kinds only).
    async fn find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>>;
    /// The tenant whose WhatsApp verify token has this blind index.
    async fn find_verify_token(&self, index: &[u8; 32]) -> Result<Option<TenantId>>;

    /// Atomically reserves up to `want` messages of the tenant's rolling-window budget.
    async fn reserve_quota(
        &self,
        tenant: TenantId,
        limit: u64,
        window_ms: u64,
        want: u64,
        now_ms: u64,
    ) -> Result<QuotaGrant>;
    /// Moves `n` counts from the oldest slots to `now_ms` (messages counted when released are
    /// re-counted when the provider accepted them, so the window runs from the real send).
    async fn restamp_quota(&self, tenant: TenantId, n: u64, now_ms: u64) -> Result<()>;
    /// Records (Some) or clears (None) that a campaign waits for quota until a time.
    async fn set_quota_wait(&self, tenant: TenantId, campaign: CampaignId, resume_at_ms: Option<u64>) -> Result<()>;
    async fn get_quota_wait(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<u64>>;
}

/// Everything the embedded deployment keeps, behind one handle.
pub trait Store: CatalogStore + MessageLog + ClaimStore + ProviderStore {}
impl<T: CatalogStore + MessageLog + ClaimStore + ProviderStore> Store for T {}
