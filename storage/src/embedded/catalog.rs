//! `CatalogStore` on the embedded store.

use super::keys::{read_u64, Key};
use super::{get, put, scan, EmbeddedStore};
use crate::model::*;
use crate::{bucket_of, CatalogStore, Error, Result};
use async_trait::async_trait;
use schemas::*;
use std::collections::HashSet;

fn tenant_key(t: TenantId) -> Vec<u8> {
    Key::new().u64(t.0).build()
}
fn child_key(t: TenantId, id: u64) -> Vec<u8> {
    Key::new().u64(t.0).u64(id).build()
}
fn recipient_key(t: TenantId, a: AudienceId, r: RecipientId) -> Vec<u8> {
    Key::new().u64(t.0).u64(a.0).u32(bucket_of(r)).u64(r.0).build()
}

#[async_trait]
impl CatalogStore for EmbeddedStore {
    async fn next_id(&self, kind: &'static str) -> Result<u64> {
        let _guard = self.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = Key::new().str("seq").str(kind).build();
        let next = get::<u64>(&self.meta, &key)?.unwrap_or(1);
        let mut batch = self.batch();
        put(&mut batch, &self.meta, key, &(next + 1))?;
        batch.commit()?;
        Ok(next)
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<()> {
        let mut batch = self.batch();
        put(&mut batch, &self.tenants, tenant_key(tenant.id), tenant)?;
        Ok(batch.commit()?)
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        get(&self.tenants, &tenant_key(id))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(scan(&self.tenants, &[], Vec::new(), usize::MAX)?.into_iter().map(|(_, t)| t).collect())
    }

    async fn delete_tenant(&self, id: TenantId) -> Result<bool> {
        remove(self, &self.tenants, tenant_key(id))
    }

    async fn put_template(&self, template: &Template) -> Result<()> {
        let mut batch = self.batch();
        put(&mut batch, &self.templates, child_key(template.tenant, template.id.0), template)?;
        Ok(batch.commit()?)
    }

    async fn get_template(&self, tenant: TenantId, id: TemplateId) -> Result<Option<Template>> {
        get(&self.templates, &child_key(tenant, id.0))
    }

    async fn list_templates(&self, tenant: TenantId) -> Result<Vec<Template>> {
        let prefix = tenant_key(tenant);
        Ok(scan(&self.templates, &prefix, prefix.clone(), usize::MAX)?.into_iter().map(|(_, t)| t).collect())
    }

    async fn delete_template(&self, tenant: TenantId, id: TemplateId) -> Result<bool> {
        remove(self, &self.templates, child_key(tenant, id.0))
    }

    async fn put_audience(&self, audience: &Audience) -> Result<()> {
        let mut batch = self.batch();
        put(&mut batch, &self.audiences, child_key(audience.tenant, audience.id.0), audience)?;
        Ok(batch.commit()?)
    }

    async fn get_audience(&self, tenant: TenantId, id: AudienceId) -> Result<Option<Audience>> {
        get(&self.audiences, &child_key(tenant, id.0))
    }

    async fn list_audiences(&self, tenant: TenantId) -> Result<Vec<Audience>> {
        let prefix = tenant_key(tenant);
        Ok(scan(&self.audiences, &prefix, prefix.clone(), usize::MAX)?.into_iter().map(|(_, a)| a).collect())
    }

    async fn add_recipients(
        &self,
        tenant: TenantId,
        audience: AudienceId,
        recipients: Vec<NewRecipient>,
    ) -> Result<AddedRecipients> {
        self.within_budget().await;
        let _guard = self.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let audience_key = child_key(tenant, audience.0);
        let mut row: Audience = get(&self.audiences, &audience_key)?
            .ok_or_else(|| Error::NotFound { what: "audience", id: audience.to_string() })?;
        let mut added = AddedRecipients::default();
        let mut seen = HashSet::with_capacity(recipients.len());
        let mut batch = self.batch();
        for r in recipients {
            let addr_key = Key::new().u64(tenant.0).u64(audience.0).str(&r.address).build();
            if !seen.insert(r.address.clone()) || self.recipient_addresses.contains_key(&addr_key)? {
                added.duplicates += 1;
                continue;
            }
            let id = RecipientId(row.next_recipient_id);
            row.next_recipient_id += 1;
            put(&mut batch, &self.recipients, recipient_key(tenant, audience, id), &(r.address, r.attrs))?;
            batch.insert(&self.recipient_addresses, addr_key, id.0.to_be_bytes());
            added.added += 1;
        }
        row.recipient_count += added.added;
        put(&mut batch, &self.audiences, audience_key, &row)?;
        batch.commit()?;
        Ok(added)
    }

    async fn read_recipients(
        &self,
        tenant: TenantId,
        audience: AudienceId,
        from: RecipientId,
        limit: usize,
    ) -> Result<Vec<Recipient>> {
        let prefix = Key::new().u64(tenant.0).u64(audience.0).build();
        let rows = scan::<(String, Vec<(String, String)>)>(
            &self.recipients,
            &prefix,
            recipient_key(tenant, audience, from),
            limit,
        )?;
        Ok(rows
            .into_iter()
            .map(|(k, (address, attrs))| {
                let id = RecipientId(read_u64(&k, 20));
                Recipient { id, bucket: bucket_of(id), address, attrs }
            })
            .collect())
    }

    async fn put_suppression(&self, tenant: TenantId, address: &str) -> Result<()> {
        let mut batch = self.batch();
        batch.insert(&self.suppressions, Key::new().u64(tenant.0).str(address).build(), now_ms().to_be_bytes());
        Ok(batch.commit()?)
    }

    async fn remove_suppression(&self, tenant: TenantId, address: &str) -> Result<bool> {
        let key = Key::new().u64(tenant.0).str(address).build();
        let existed = self.suppressions.contains_key(&key)?;
        let mut batch = self.batch();
        batch.remove(&self.suppressions, key);
        batch.commit()?;
        Ok(existed)
    }

    async fn suppressed(&self, tenant: TenantId, addresses: &[&str]) -> Result<Vec<bool>> {
        // Most tenants suppress few addresses: skip the per-address lookups when there are none.
        let prefix = Key::new().u64(tenant.0).build();
        if self.suppressions.prefix(&prefix).next().is_none() {
            return Ok(vec![false; addresses.len()]);
        }
        addresses.iter().map(|a| Ok(self.suppressions.contains_key(Key::new().u64(tenant.0).str(a).build())?)).collect()
    }

    async fn list_suppressions(&self, tenant: TenantId, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let prefix = tenant_key(tenant);
        let start = match after {
            Some(a) => {
                let mut k = Key::new().u64(tenant.0).str(a).build();
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let end = super::keys::prefix_end(&prefix);
        let iter = match end {
            Some(end) => self.suppressions.range(start..end),
            None => self.suppressions.range(start..),
        };
        let mut out = Vec::new();
        for guard in iter.take(limit) {
            let key = guard.key()?;
            // key = tenant (8 bytes) + address + 0 terminator
            out.push(String::from_utf8_lossy(&key[8..key.len().saturating_sub(1)]).into_owned());
        }
        Ok(out)
    }

    async fn get_idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>> {
        get(&self.meta, &Key::new().str("idem").str(scope).str(key).build())
    }

    async fn put_idempotency(&self, scope: &str, key: &str, record: &IdempotencyRecord) -> Result<()> {
        let mut batch = self.batch();
        put(&mut batch, &self.meta, Key::new().str("idem").str(scope).str(key).build(), record)?;
        Ok(batch.commit()?)
    }

    async fn put_campaign(&self, campaign: &Campaign) -> Result<()> {
        let mut batch = self.batch();
        put(&mut batch, &self.campaigns, child_key(campaign.tenant, campaign.id.0), campaign)?;
        Ok(batch.commit()?)
    }

    async fn get_campaign(&self, tenant: TenantId, id: CampaignId) -> Result<Option<Campaign>> {
        get(&self.campaigns, &child_key(tenant, id.0))
    }

    async fn list_campaigns(&self, tenant: TenantId) -> Result<Vec<Campaign>> {
        let prefix = tenant_key(tenant);
        Ok(scan(&self.campaigns, &prefix, prefix.clone(), usize::MAX)?.into_iter().map(|(_, c)| c).collect())
    }

    async fn get_checkpoint(&self, tenant: TenantId, campaign: CampaignId) -> Result<ChunkCheckpoint> {
        Ok(get(&self.checkpoints, &child_key(tenant, campaign.0))?.unwrap_or_default())
    }

    async fn put_checkpoint(&self, tenant: TenantId, campaign: CampaignId, checkpoint: ChunkCheckpoint) -> Result<()> {
        let mut batch = self.batch();
        put(&mut batch, &self.checkpoints, child_key(tenant, campaign.0), &checkpoint)?;
        Ok(batch.commit()?)
    }
}

/// Removes a key; whether it existed.
fn remove(store: &EmbeddedStore, ks: &fjall::Keyspace, key: Vec<u8>) -> Result<bool> {
    let existed = ks.contains_key(&key)?;
    let mut batch = store.batch();
    batch.remove(ks, key);
    batch.commit()?;
    Ok(existed)
}
