//! `Catalog` on ScyllaDB: tenants, templates, suppressions, campaigns (compare-and-set by a
//! lightweight transaction), provider settings with their global sender index (claimed with
//! `IF NOT EXISTS`) and verify-token index, and the tenant purge.

use super::{big, body, from_body, unavailable, ScyllaStore};
use crate::model::*;
use crate::{Audiences, Catalog, Error, Result};
use async_trait::async_trait;
use schemas::*;
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};
use std::collections::BTreeSet;

/// Shards of the provider-id index per tenant (see the schema).
pub(super) const PROVIDER_ID_SHARDS: u32 = 256;

/// Whether a lightweight transaction applied (its first column, `[applied]`).
pub(super) fn applied(result: QueryResult) -> Result<bool> {
    let rows = result.into_rows_result().map_err(|e| unavailable("lightweight transaction", e))?;
    let first = rows.maybe_first_row::<Row>().map_err(|e| unavailable("lightweight transaction", e))?;
    Ok(matches!(first.and_then(|r| r.columns.into_iter().next().flatten()), Some(CqlValue::Boolean(true))))
}

impl ScyllaStore {
    async fn one<T: serde::de::DeserializeOwned>(
        &self,
        st: &scylla::statement::prepared::PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<T>> {
        match self.rows::<(Vec<u8>,)>(st, values).await?.into_iter().next() {
            Some((bytes,)) => Ok(Some(from_body(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn all<T: serde::de::DeserializeOwned>(
        &self,
        st: &scylla::statement::prepared::PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<T>> {
        self.paged::<(Vec<u8>,)>(st, values).await?.iter().map(|(b,)| from_body(b)).collect()
    }

    /// Claims each global sender for the config's tenant; on a sender owned by another tenant,
    /// gives back what this call claimed and refuses.
    async fn claim_senders(&self, config: &ProviderConfig) -> Result<()> {
        let kind = config.settings.kind();
        if !kind.senders_are_global() {
            return Ok(());
        }
        let (k, tenant) = (kind.ordinal() as i32, big(config.tenant.0));
        let mut claimed = Vec::new();
        for s in config.settings.senders() {
            let result = self
                .session
                .execute_unpaged(&self.st.claim_sender, (k, s.id.as_str(), tenant))
                .await
                .map_err(|e| unavailable("claiming a sender", e))?;
            if applied(result)? {
                claimed.push(s.id.clone());
                continue;
            }
            let owner = self.rows::<(i64,)>(&self.st.get_sender, (k, s.id.as_str())).await?;
            if owner.first().is_some_and(|(o,)| *o != tenant) {
                for id in &claimed {
                    self.exec(&self.st.release_sender, (k, id.as_str(), tenant)).await?;
                }
                return Err(Error::SenderTaken { sender: s.id.clone() });
            }
        }
        Ok(())
    }

    /// Removes the index entries of `old` that still point at its tenant and that `new` does
    /// not keep.
    async fn unindex(&self, old: &ProviderConfig, new: Option<&ProviderConfig>) -> Result<()> {
        let kind = old.settings.kind();
        let tenant = big(old.tenant.0);
        if kind.senders_are_global() {
            for s in old.settings.senders() {
                if new.is_some_and(|n| n.settings.senders().iter().any(|x| x.id == s.id)) {
                    continue;
                }
                self.exec(&self.st.release_sender, (kind.ordinal() as i32, s.id.as_str(), tenant)).await?;
            }
        }
        if let Some(index) = old.verify_token_index {
            if new.and_then(|n| n.verify_token_index) != Some(index)
                && self.find_verify_token(&index).await? == Some(old.tenant)
            {
                self.exec(&self.st.delete_verify_token, (index.to_vec(),)).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Catalog for ScyllaStore {
    async fn put_tenant(&self, tenant: &Tenant) -> Result<()> {
        tenant.check_limits().map_err(|e| Error::Invalid { code: e.code, message: e.message })?;
        self.exec(&self.st.put_tenant, (big(tenant.id.0), body(tenant)?)).await
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.one(&self.st.get_tenant, (big(id.0),)).await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.all(&self.st.list_tenants, ()).await
    }

    async fn purge_tenant(&self, id: TenantId, budget: usize) -> Result<bool> {
        // One unit of budget per partition deleted (a partition delete is one tombstone).
        for kind in ProviderKind::ALL {
            self.delete_provider(id, kind).await?;
        }
        let t = big(id.0);
        let mut left = budget.max(1);
        for audience in self.list_audiences(id).await? {
            let a = big(audience.id.0);
            let last_bucket = crate::bucket_of(RecipientId(audience.next_recipient_id.saturating_sub(1)));
            for bucket in 0..=last_bucket {
                self.exec(&self.st.purge_recipients, (t, a, bucket as i32)).await?;
            }
            for shard in 0..super::audiences::ADDRESS_SHARDS {
                self.exec(&self.st.purge_addresses, (t, a, shard as i32)).await?;
            }
            left = left.saturating_sub(1);
        }
        let mut campaigns: BTreeSet<i64> = self.list_campaigns(id).await?.iter().map(|c| big(c.id.0)).collect();
        campaigns.extend(self.rows::<(i64,)>(&self.st.list_log_campaigns, (t,)).await?.into_iter().map(|(c,)| c));
        for c in campaigns {
            for (bucket,) in self.rows::<(i32,)>(&self.st.list_buckets, (t, c)).await? {
                self.exec(&self.st.purge_messages, (t, c, bucket)).await?;
            }
            for st in [
                &self.st.purge_buckets,
                &self.st.purge_checkpoint,
                &self.st.purge_counters,
                &self.st.purge_timeline,
                &self.st.purge_journal,
                &self.st.purge_dlq,
            ] {
                self.exec(st, (t, c)).await?;
            }
            left = left.saturating_sub(1);
        }
        for shard in 0..PROVIDER_ID_SHARDS {
            self.exec(&self.st.purge_provider_ids, (t, shard as i32)).await?;
        }
        // The per-tenant partitions last: the loops above find their work through them.
        for st in [
            &self.st.purge_templates,
            &self.st.purge_suppressions,
            &self.st.purge_campaigns,
            &self.st.purge_audiences,
            &self.st.purge_log_campaigns,
        ] {
            self.exec(st, (t,)).await?;
        }
        Ok(left > 0)
    }

    async fn put_template(&self, template: &Template) -> Result<()> {
        self.exec(&self.st.put_template, (big(template.tenant.0), big(template.id.0), body(template)?)).await
    }

    async fn get_template(&self, tenant: TenantId, id: TemplateId) -> Result<Option<Template>> {
        self.one(&self.st.get_template, (big(tenant.0), big(id.0))).await
    }

    async fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>> {
        self.all(&self.st.list_templates, (big(tenant.0),)).await
    }

    async fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<bool> {
        let existed = self.get_template(tenant, id).await?.is_some();
        self.exec(&self.st.delete_template, (big(tenant.0), big(id.0))).await?;
        Ok(existed)
    }

    async fn put_suppression(&self, tenant: TenantId, address: &str) -> Result<()> {
        self.exec(&self.st.put_suppression, (big(tenant.0), address, now_ms() as i64)).await
    }

    async fn remove_suppression(&self, tenant: TenantId, address: &str) -> Result<bool> {
        let existed = !self.rows::<(String,)>(&self.st.get_suppression, (big(tenant.0), address)).await?.is_empty();
        self.exec(&self.st.delete_suppression, (big(tenant.0), address)).await?;
        Ok(existed)
    }

    async fn suppressed(&self, tenant: TenantId, addresses: &[&str]) -> Result<Vec<bool>> {
        let t = big(tenant.0);
        // Most tenants suppress few addresses: one read says whether there are any.
        if self.rows::<(String,)>(&self.st.any_suppression, (t,)).await?.is_empty() {
            return Ok(vec![false; addresses.len()]);
        }
        // One read per 100 addresses (an `IN` on the tenant's partition), not one per address.
        let mut found = std::collections::HashSet::new();
        for chunk in addresses.chunks(100) {
            let rows = self.rows::<(String,)>(&self.st.find_suppressions, (t, chunk.to_vec())).await?;
            found.extend(rows.into_iter().map(|(a,)| a));
        }
        Ok(addresses.iter().map(|a| found.contains(*a)).collect())
    }

    async fn list_suppressions(&self, tenant: TenantId, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let limit = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let rows = match after {
            Some(a) => self.rows::<(String,)>(&self.st.list_suppressions_after, (big(tenant.0), a, limit)).await?,
            None => self.rows::<(String,)>(&self.st.list_suppressions, (big(tenant.0), limit)).await?,
        };
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    async fn put_campaign(&self, campaign: &Campaign) -> Result<()> {
        let values = (big(campaign.tenant.0), big(campaign.id.0), campaign.version as i64, body(campaign)?);
        self.exec(&self.st.put_campaign, values).await
    }

    async fn update_campaign(&self, campaign: &Campaign, expected_version: u64) -> Result<bool> {
        let next = Campaign { version: expected_version + 1, ..campaign.clone() };
        let values =
            (next.version as i64, body(&next)?, big(campaign.tenant.0), big(campaign.id.0), expected_version as i64);
        let result = self
            .session
            .execute_unpaged(&self.st.update_campaign, values)
            .await
            .map_err(|e| unavailable("updating a campaign", e))?;
        applied(result)
    }

    async fn get_campaign(&self, tenant: TenantId, id: CampaignId) -> Result<Option<Campaign>> {
        self.one(&self.st.get_campaign, (big(tenant.0), big(id.0))).await
    }

    async fn list_campaigns(&self, tenant: TenantId) -> Result<Vec<Campaign>> {
        self.all(&self.st.list_campaigns, (big(tenant.0),)).await
    }

    async fn put_provider(&self, config: &ProviderConfig) -> Result<()> {
        self.claim_senders(config).await?;
        let kind = config.settings.kind();
        if let Some(old) = self.get_provider(config.tenant, kind).await? {
            self.unindex(&old, Some(config)).await?;
        }
        if let Some(index) = config.verify_token_index {
            self.exec(&self.st.put_verify_token, (index.to_vec(), big(config.tenant.0))).await?;
        }
        self.exec(&self.st.put_provider, (big(config.tenant.0), kind.ordinal() as i32, body(config)?)).await
    }

    async fn get_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>> {
        self.one(&self.st.get_provider, (big(tenant.0), kind.ordinal() as i32)).await
    }

    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderConfig>> {
        let mut out = Vec::new();
        for kind in ProviderKind::ALL {
            out.extend(self.get_provider(tenant, kind).await?);
        }
        Ok(out)
    }

    async fn delete_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool> {
        let Some(old) = self.get_provider(tenant, kind).await? else { return Ok(false) };
        self.unindex(&old, None).await?;
        self.exec(&self.st.delete_provider, (big(tenant.0), kind.ordinal() as i32)).await?;
        Ok(true)
    }

    async fn find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>> {
        if !kind.senders_are_global() {
            return Ok(None);
        }
        let rows = self.rows::<(i64,)>(&self.st.get_sender, (kind.ordinal() as i32, sender)).await?;
        Ok(rows.first().map(|(t,)| TenantId(*t as u64)))
    }

    async fn find_verify_token(&self, index: &[u8; 32]) -> Result<Option<TenantId>> {
        let rows = self.rows::<(i64,)>(&self.st.get_verify_token, (index.to_vec(),)).await?;
        Ok(rows.first().map(|(t,)| TenantId(*t as u64)))
    }
}
