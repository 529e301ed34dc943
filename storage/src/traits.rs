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

    async fn put_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Removes the tenant row (its objects become unreachable: every lookup is by tenant).
    async fn delete_tenant(&self, id: TenantId) -> Result<bool>;

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

    async fn get_idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>>;
    async fn put_idempotency(&self, scope: &str, key: &str, record: &IdempotencyRecord) -> Result<()>;

    async fn put_campaign(&self, campaign: &Campaign) -> Result<()>;
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
    /// Resolves provider message ids of `provider` to message keys.
    async fn lookup_provider_ids(&self, provider: &str, ids: &[&str]) -> Result<Vec<Option<MessageKey>>>;
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
    async fn get_claims(&self, ids: &[MessageId]) -> Result<Vec<Option<Claim>>>;
    /// Records claims; durable (survives a process kill) when it returns.
    async fn put_claims(&self, claims: &[(MessageId, Claim)]) -> Result<()>;
}

/// Tenant provider settings (secrets sealed by the caller), the sender → tenant index used to
/// route provider webhooks, and the messaging-tier quota.
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// Stores a tenant's provider settings and indexes its senders (replacing old entries).
    async fn put_provider(&self, config: &ProviderConfig) -> Result<()>;
    async fn get_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>>;
    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderConfig>>;
    async fn delete_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool>;
    /// The tenant whose `kind` provider has a sender with this id.
    async fn find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>>;

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
