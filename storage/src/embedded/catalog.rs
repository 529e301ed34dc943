//! `Catalog` on the embedded store: tenants, templates, suppressions, campaigns, provider
//! settings (their index lives in `providers.rs`), and the tenant purge.

use super::keys::{self, Key};
use super::{get, put, scan, EmbeddedStore};
use crate::model::*;
use crate::{Catalog, Error, Result};
use async_trait::async_trait;
use schemas::*;

pub(super) fn tenant_key(t: TenantId) -> Vec<u8> {
    Key::new().u64(t.0).build()
}
pub(super) fn child_key(t: TenantId, id: u64) -> Vec<u8> {
    Key::new().u64(t.0).u64(id).build()
}

#[async_trait]
impl Catalog for EmbeddedStore {
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
            self.provider_delete(id, kind)?;
        }
        let (long, short) = (tenant_key(id), keys::short_tenant(id));
        let mut left = budget.max(1);
        let fixed = [
            &self.templates,
            &self.audiences,
            &self.recipients,
            &self.recipient_addresses,
            &self.suppressions,
            &self.campaigns,
            &self.checkpoints,
            &self.counters,
            &self.provider_ids,
            &self.inflight,
            &self.dlq,
            &self.quota,
            &self.idempotency,
            &self.stopped,
        ];
        let keyspaces = fixed
            .into_iter()
            .chain(self.legacy_claims.as_ref())
            .chain(self.legacy_provider_ids.as_ref())
            .map(|ks| (ks, &long))
            .chain([(&self.messages, &short), (&self.claims, &short)]);
        for (ks, prefix) in keyspaces {
            let keys = ks.prefix(prefix).take(left).map(|g| g.key()).collect::<std::result::Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                continue;
            }
            left -= keys.len();
            let _guard = self.cas_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = self.batch();
            for k in &keys {
                batch.remove(ks, k.clone());
            }
            batch.commit()?;
            if std::ptr::eq(ks, &self.inflight) {
                self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).forget_rows(&keys);
            }
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

    async fn put_provider(&self, config: &ProviderConfig) -> Result<()> {
        self.provider_put(config)
    }

    async fn get_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>> {
        self.provider_get(tenant, kind)
    }

    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderConfig>> {
        ProviderKind::ALL.into_iter().filter_map(|kind| self.provider_get(tenant, kind).transpose()).collect()
    }

    async fn delete_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool> {
        self.provider_delete(tenant, kind)
    }

    async fn find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>> {
        self.provider_find_sender(kind, sender)
    }

    async fn find_verify_token(&self, index: &[u8; 32]) -> Result<Option<TenantId>> {
        self.provider_find_verify_token(index)
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
