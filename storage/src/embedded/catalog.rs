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
fn idempotency_key(t: TenantId, scope: &str, key: &str) -> Vec<u8> {
    Key::new().u64(t.0).str(scope).str(key).build()
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
        tenant.check_limits().map_err(|e| Error::Invalid { code: e.code, message: e.message })?;
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

    async fn purge_tenant(&self, id: TenantId, budget: usize) -> Result<bool> {
        // Provider settings first: their sender and verify-token index entries are found
        // through them.
        for kind in ProviderKind::ALL {
            crate::ProviderStore::delete_provider(self, id, kind).await?;
        }
        let prefix = tenant_key(id);
        let mut left = budget.max(1);
        for ks in [
            &self.templates,
            &self.audiences,
            &self.recipients,
            &self.recipient_addresses,
            &self.suppressions,
            &self.campaigns,
            &self.checkpoints,
            &self.counters,
            &self.messages,
            &self.provider_ids,
            &self.claims,
            &self.dlq,
            &self.quota,
            &self.idempotency,
        ] {
            let keys = ks.prefix(&prefix).take(left).map(|g| g.key()).collect::<std::result::Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                continue;
            }
            left -= keys.len();
            let mut batch = self.batch();
            for k in keys {
                batch.remove(ks, k);
            }
            batch.commit()?;
            if left == 0 {
                return Ok(false);
            }
        }
        Ok(true)
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
        let _guard = self.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let k = idempotency_key(tenant, scope, key);
        let live = match get::<IdempotencyEntry>(&self.idempotency, &k)? {
            Some(IdempotencyEntry::InProgress { until_ms, .. }) if until_ms > now_ms => {
                return Ok(Reservation::InProgress);
            }
            Some(IdempotencyEntry::Done(record)) if record.created_ms.saturating_add(ttl_ms) > now_ms => Some(record),
            // Lapsed or expired: the key is free again.
            _ => None,
        };
        if let Some(record) = live {
            return Ok(if record.request_hash == request_hash {
                Reservation::Replay(record)
            } else {
                Reservation::Mismatch
            });
        }
        let entry = IdempotencyEntry::InProgress {
            request_hash: request_hash.to_string(),
            until_ms: now_ms.saturating_add(lease_ms),
        };
        let mut batch = self.batch();
        put(&mut batch, &self.idempotency, k, &entry)?;
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
        let _guard = self.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.batch();
        put(
            &mut batch,
            &self.idempotency,
            idempotency_key(tenant, scope, key),
            &IdempotencyEntry::Done(record.clone()),
        )?;
        Ok(batch.commit()?)
    }

    async fn release_idempotency(&self, tenant: TenantId, scope: &str, key: &str) -> Result<()> {
        let _guard = self.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let k = idempotency_key(tenant, scope, key);
        if matches!(get::<IdempotencyEntry>(&self.idempotency, &k)?, Some(IdempotencyEntry::InProgress { .. })) {
            remove(self, &self.idempotency, k)?;
        }
        Ok(())
    }

    async fn sweep_idempotency(&self, now_ms: u64, ttl_ms: u64, budget: usize) -> Result<usize> {
        let mut stale = Vec::new();
        for guard in self.idempotency.iter() {
            let (k, v) = guard.into_inner()?;
            let expired = match codec::decode::<IdempotencyEntry>(&v)? {
                IdempotencyEntry::InProgress { until_ms, .. } => until_ms <= now_ms,
                IdempotencyEntry::Done(r) => r.created_ms.saturating_add(ttl_ms) <= now_ms,
            };
            if expired {
                stale.push(k);
                if stale.len() >= budget {
                    break;
                }
            }
        }
        let _guard = self.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.batch();
        for k in &stale {
            batch.remove(&self.idempotency, k.clone());
        }
        batch.commit()?;
        Ok(stale.len())
    }

    async fn put_campaign(&self, campaign: &Campaign) -> Result<()> {
        let _guard = self.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.batch();
        put(&mut batch, &self.campaigns, child_key(campaign.tenant, campaign.id.0), campaign)?;
        Ok(batch.commit()?)
    }

    async fn update_campaign(&self, campaign: &Campaign, expected_version: u64) -> Result<bool> {
        let _guard = self.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = child_key(campaign.tenant, campaign.id.0);
        let current = get::<Campaign>(&self.campaigns, &key)?.map(|c| c.version);
        if current != Some(expected_version) {
            return Ok(false);
        }
        let next = Campaign { version: expected_version + 1, ..campaign.clone() };
        let mut batch = self.batch();
        put(&mut batch, &self.campaigns, key, &next)?;
        batch.commit()?;
        Ok(true)
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
