//! The store contracts, split by who needs them. Async so a network store (ScyllaDB)
//! implements them without blocking; held as `Arc<dyn ...>`.
//!
//! Every method's doc says what it promises atomically, and only what a CQL table can keep:
//! single-partition batches are atomic, nothing across partitions is; a lightweight transaction
//! (`IF ...`) is a compare-and-set but costs four round trips, so it is only on control paths
//! (never per message). The embedded store gives more (fjall batches span tables) but callers
//! rely only on what is written here; the conformance kit (`crate::conformance`) checks it.
//!
//! | trait | used by |
//! |---|---|
//! | [`Catalog`] | the API, lifecycle, render, throttle, deliver's routes, webhooks |
//! | [`Audiences`] | the API (imports), chunk (reads) |
//! | [`Checkpoints`] | chunk |
//! | [`MessageLog`] | reconcile (the single writer), the API (reads) |
//!
//! Send claims, ids, idempotency reservations, quotas, leases, pacing tokens, campaign control
//! flags and stopped senders are shared state, not store data: [`crate::state::SharedState`].

use crate::model::*;
use crate::Result;
use async_trait::async_trait;
use schemas::*;

/// Tenants, templates, campaigns, suppressions and provider settings: the control plane's
/// definitions. Written by the API and the lifecycle; read everywhere.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Writes a tenant (one partition). Refuses (`Error::Invalid`) limits outside the
    /// platform's bounds ([`Tenant::check_limits`]), whoever the caller is.
    async fn put_tenant(&self, tenant: &Tenant) -> Result<()>;
    /// The tenant in any state (deleted and purged tenants keep a tombstone row).
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    /// Every tenant row, tombstones included.
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Removes up to `budget` rows the tenant owns in every table (templates, audiences and
    /// recipients, suppressions, campaigns with their checkpoints, counters, message log,
    /// provider-id index, DLQ, provider settings and their index entries), never its tenant
    /// row; not atomic (partition by partition: call again until it answers `true`).
    async fn purge_tenant(&self, id: TenantId, budget: usize) -> Result<bool>;

    async fn put_template(&self, template: &Template) -> Result<()>;
    async fn get_template(&self, tenant: TenantId, id: TemplateId) -> Result<Option<Template>>;
    async fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>>;
    async fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<bool>;

    async fn put_suppression(&self, tenant: TenantId, address: &str) -> Result<()>;
    async fn remove_suppression(&self, tenant: TenantId, address: &str) -> Result<bool>;
    /// For each address, whether it is suppressed for the tenant (one partition per tenant).
    async fn suppressed(&self, tenant: TenantId, addresses: &[&str]) -> Result<Vec<bool>>;
    /// Up to `limit` suppressed addresses after `after` (exclusive), in address order.
    async fn list_suppressions(&self, tenant: TenantId, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Creates a campaign (a fresh id, version 0). Status changes go through
    /// [`Catalog::update_campaign`].
    async fn put_campaign(&self, campaign: &Campaign) -> Result<()>;
    /// Compare-and-set: writes `campaign` with version `expected_version + 1` if the stored
    /// campaign still has `expected_version` (a lightweight transaction on the control path,
    /// never per message). Whether it was written; on `false` nothing changed.
    async fn update_campaign(&self, campaign: &Campaign, expected_version: u64) -> Result<bool>;
    async fn get_campaign(&self, tenant: TenantId, id: CampaignId) -> Result<Option<Campaign>>;
    async fn list_campaigns(&self, tenant: TenantId) -> Result<Vec<Campaign>>;

    /// Stores a tenant's provider settings and indexes its globally unique senders and its
    /// verify token (replacing its old entries). When a global sender
    /// ([`ProviderKind::senders_are_global`]) belongs to another tenant nothing is written and
    /// the answer is `Error::SenderTaken`: the ownership check and the write are one step
    /// (CQL: `INSERT ... IF NOT EXISTS` per sender, rare, on the control path).
    async fn put_provider(&self, config: &ProviderConfig) -> Result<()>;
    async fn get_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>>;
    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderConfig>>;
    /// Removes the settings and the index entries that still point at this tenant.
    async fn delete_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool>;
    /// The tenant whose `kind` provider has a sender with this id (global kinds only).
    async fn find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>>;
    /// The tenant whose WhatsApp verify token has this blind index.
    async fn find_verify_token(&self, index: &[u8; 32]) -> Result<Option<TenantId>>;
}

/// Audiences and their recipients (bucketed, so chunk reads are range scans of one partition).
#[async_trait]
pub trait Audiences: Send + Sync {
    async fn put_audience(&self, audience: &Audience) -> Result<()>;
    async fn get_audience(&self, tenant: TenantId, id: AudienceId) -> Result<Option<Audience>>;
    async fn list_audiences(&self, tenant: TenantId) -> Result<Vec<Audience>>;
    /// Appends recipients: ids assigned densely from the audience's `next_recipient_id`,
    /// duplicates by address skipped and counted. The caller is the audience's single writer
    /// (one import at a time per audience: the API takes an import lease); recipients are
    /// written before the audience row that counts them, so a crash leaves rows past the count
    /// that the next import overwrites, never a count past the rows.
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
}

/// How far chunk got with each campaign.
#[async_trait]
pub trait Checkpoints: Send + Sync {
    async fn get_checkpoint(&self, tenant: TenantId, campaign: CampaignId) -> Result<ChunkCheckpoint>;
    /// Durable when it returns (chunk resumes from it after a crash). One row.
    async fn put_checkpoint(&self, tenant: TenantId, campaign: CampaignId, checkpoint: ChunkCheckpoint) -> Result<()>;
}

/// The message log, its provider-id index, campaign counters and DLQ entries. Reconcile is the
/// single writer of a campaign's rows and counters (it owns the campaign's partition of
/// `delivery.outcomes`), so counters are regular values it writes, never database counters.
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
    /// Up to `limit` timeline points of a campaign after window `after_ms` (exclusive), oldest
    /// first: `(window start, the counters as the last write in that window left them)`.
    async fn get_timeline(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, CampaignCounters)>>;
    /// Finishes whatever `apply` a crash or an error cut short for this campaign, so its rows,
    /// index entries, DLQ entries and counters agree again. Reconcile calls it before it reads a
    /// campaign's rows for the first time after it took the campaign's partition over, and
    /// after any failed `apply`; a no-op where `apply` is atomic.
    async fn settle(&self, tenant: TenantId, campaign: CampaignId) -> Result<()>;
    /// Writes rows, index entries, removed and added DLQ entries, then counters and their
    /// timeline point; durable when it returns. All or nothing per campaign once `settle` ran:
    /// a replay of the same events finds rows and counters either both before or both after
    /// the batch. (Replaying events is idempotent on rows, so a batch that left rows ahead of
    /// counters would lose those transitions from the counters for good.)
    async fn apply(&self, batch: LogBatch) -> Result<()>;
    /// Up to `limit` rows of a campaign after `after` (exclusive), in (bucket, message id) order.
    async fn scan_messages(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after: Option<(u32, MessageId)>,
        limit: usize,
    ) -> Result<Vec<(MessageKey, MessageRecord)>>;
    /// Up to `limit` DLQ entries of a campaign after `after` (exclusive).
    async fn scan_dlq(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<DlqEntry>>;
}

/// Everything the control plane reads and writes, behind one handle.
pub trait Store: Catalog + Audiences + Checkpoints + MessageLog {}
impl<T: Catalog + Audiences + Checkpoints + MessageLog> Store for T {}
