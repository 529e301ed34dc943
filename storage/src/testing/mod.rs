//! Test support for backends and their callers: [`YieldingStore`] and [`YieldingState`] wrap a
//! store or shared state and yield to the scheduler (and sleep briefly) before and after every
//! call, so concurrent callers interleave between their steps the way they would against a
//! networked backend. A protocol that only holds because calls to the embedded backend happen
//! not to interleave fails against them (read-then-write idempotency or status changes).
//!
//! It is not: a mock. Every call reaches the wrapped backend.

use crate::model::*;
use crate::state::{ClaimWrite, Fence, Lease, Pace, SharedState, TokenGrant};
use crate::{Audiences, Catalog, Checkpoints, MessageLog, Result, Store};
use async_trait::async_trait;
use schemas::*;
use std::sync::Arc;
use std::time::Duration;

/// A store that yields between calls (see the module docs).
pub struct YieldingStore<S: ?Sized> {
    pause: Duration,
    inner: Arc<S>,
}

/// Shared state that yields between calls (see the module docs).
pub struct YieldingState<S: ?Sized> {
    pause: Duration,
    inner: Arc<S>,
}

macro_rules! wrapper {
    ($wrapper:ident) => {
        impl<S: ?Sized> $wrapper<S> {
            /// Wraps `inner`, sleeping `pause` before and after each call.
            pub fn new(inner: Arc<S>, pause: Duration) -> Self {
                Self { pause, inner }
            }

            async fn pause(&self) {
                tokio::task::yield_now().await;
                tokio::time::sleep(self.pause).await;
            }
        }
    };
}
wrapper!(YieldingStore);
wrapper!(YieldingState);

/// Implements a trait for a wrapper by delegation with pauses around each call.
macro_rules! yielding {
    ($wrapper:ident, $bound:ident, $trait:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl<S: $bound + ?Sized> $trait for $wrapper<S> {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.pause().await;
                    let r = self.inner.$name($($arg),*).await;
                    self.pause().await;
                    r
                }
            )*
        }
    };
}

yielding!(YieldingStore, Store, Catalog {
    fn put_tenant(&self, tenant: &Tenant) -> Result<()>;
    fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    fn list_tenants(&self) -> Result<Vec<Tenant>>;
    fn purge_tenant(&self, id: TenantId, budget: usize) -> Result<bool>;
    fn put_template(&self, template: &Template) -> Result<()>;
    fn get_template(&self, tenant: TenantId, id: TemplateId) -> Result<Option<Template>>;
    fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>>;
    fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<bool>;
    fn put_suppression(&self, tenant: TenantId, address: &str) -> Result<()>;
    fn remove_suppression(&self, tenant: TenantId, address: &str) -> Result<bool>;
    fn suppressed(&self, tenant: TenantId, addresses: &[&str]) -> Result<Vec<bool>>;
    fn list_suppressions(&self, tenant: TenantId, after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    fn put_campaign(&self, campaign: &Campaign) -> Result<()>;
    fn update_campaign(&self, campaign: &Campaign, expected_version: u64) -> Result<bool>;
    fn get_campaign(&self, tenant: TenantId, id: CampaignId) -> Result<Option<Campaign>>;
    fn list_campaigns(&self, tenant: TenantId) -> Result<Vec<Campaign>>;
    fn put_provider(&self, config: &ProviderConfig) -> Result<()>;
    fn get_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>>;
    fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderConfig>>;
    fn delete_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool>;
    fn find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>>;
    fn find_verify_token(&self, index: &[u8; 32]) -> Result<Option<TenantId>>;
});
yielding!(YieldingStore, Store, Audiences {
    fn put_audience(&self, audience: &Audience) -> Result<()>;
    fn get_audience(&self, tenant: TenantId, id: AudienceId) -> Result<Option<Audience>>;
    fn list_audiences(&self, tenant: TenantId) -> Result<Vec<Audience>>;
    fn add_recipients(&self, tenant: TenantId, audience: AudienceId, recipients: Vec<NewRecipient>) -> Result<AddedRecipients>;
    fn read_recipients(&self, tenant: TenantId, audience: AudienceId, from: RecipientId, limit: usize) -> Result<Vec<Recipient>>;
});
yielding!(YieldingStore, Store, Checkpoints {
    fn get_checkpoint(&self, tenant: TenantId, campaign: CampaignId) -> Result<ChunkCheckpoint>;
    fn put_checkpoint(&self, tenant: TenantId, campaign: CampaignId, checkpoint: ChunkCheckpoint) -> Result<()>;
});
yielding!(YieldingStore, Store, MessageLog {
    fn get_messages(&self, keys: &[MessageKey]) -> Result<Vec<Option<MessageRecord>>>;
    fn lookup_provider_ids(&self, tenant: TenantId, provider: &str, ids: &[&str]) -> Result<Vec<Option<MessageKey>>>;
    fn get_counters(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignCounters>>;
    fn get_timeline(&self, tenant: TenantId, campaign: CampaignId, after_ms: Option<u64>, limit: usize) -> Result<Vec<(u64, CampaignCounters)>>;
    fn settle(&self, tenant: TenantId, campaign: CampaignId) -> Result<()>;
    fn apply(&self, batch: LogBatch) -> Result<()>;
    fn scan_messages(&self, tenant: TenantId, campaign: CampaignId, after: Option<(u32, MessageId)>, limit: usize) -> Result<Vec<(MessageKey, MessageRecord)>>;
    fn scan_dlq(&self, tenant: TenantId, campaign: CampaignId, after: Option<MessageId>, limit: usize) -> Result<Vec<DlqEntry>>;
});
yielding!(YieldingState, SharedState, SharedState {
    fn next_id(&self, kind: &'static str) -> Result<u64>;
    fn get_claims(&self, keys: &[MessageKey]) -> Result<Vec<Option<Claim>>>;
    fn put_claims(&self, writes: &[ClaimWrite], fence: Option<&Fence>) -> Result<Vec<bool>>;
    fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: u64, now_ms: u64) -> Result<Option<Lease>>;
    fn release_lease(&self, lease: &Lease) -> Result<()>;
    fn get_lease(&self, name: &str) -> Result<Option<Lease>>;
    fn take_tokens(&self, bucket: &str, pace: Pace, want: u32) -> Result<TokenGrant>;
    fn refund_tokens(&self, bucket: &str, pace: Pace, n: u32) -> Result<()>;
    fn publish_status(&self, tenant: TenantId, campaign: CampaignId, status: CampaignStatus) -> Result<()>;
    fn campaign_status(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignStatus>>;
    fn reserve_idempotency(&self, tenant: TenantId, scope: &str, key: &str, request_hash: &str, now_ms: u64, lease_ms: u64, ttl_ms: u64) -> Result<Reservation>;
    fn complete_idempotency(&self, tenant: TenantId, scope: &str, key: &str, record: &IdempotencyRecord) -> Result<()>;
    fn release_idempotency(&self, tenant: TenantId, scope: &str, key: &str) -> Result<()>;
    fn sweep_idempotency(&self, now_ms: u64, ttl_ms: u64, budget: usize) -> Result<usize>;
    fn reserve_quota(&self, tenant: TenantId, limit: u64, window_ms: u64, want: u64, now_ms: u64) -> Result<QuotaGrant>;
    fn restamp_quota(&self, tenant: TenantId, n: u64, now_ms: u64) -> Result<()>;
    fn set_quota_wait(&self, tenant: TenantId, campaign: CampaignId, resume_at_ms: Option<u64>) -> Result<()>;
    fn get_quota_wait(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<u64>>;
    fn stop_sender(&self, tenant: TenantId, provider: &str, sender: &str) -> Result<()>;
    fn stopped_senders(&self, tenant: TenantId) -> Result<Vec<(String, String)>>;
    fn clear_stopped(&self, tenant: TenantId, provider: &str) -> Result<()>;
    fn purge_tenant(&self, tenant: TenantId, budget: usize) -> Result<bool>;
});

pub mod servers;
