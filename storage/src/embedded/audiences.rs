//! `Audiences` and `Checkpoints` on the embedded store: audiences, their recipients bucketed by
//! id (chunk reads are range scans), the address index that dedupes imports, chunk checkpoints.

use super::catalog::{child_key, tenant_key};
use super::keys::{read_u64, Key};
use super::{get, put, scan, EmbeddedStore};
use crate::model::*;
use crate::{bucket_of, Audiences, Checkpoints, Error, Result};
use async_trait::async_trait;
use schemas::*;
use std::collections::HashSet;

fn recipient_key(t: TenantId, a: AudienceId, r: RecipientId) -> Vec<u8> {
    Key::new().u64(t.0).u64(a.0).u32(bucket_of(r)).u64(r.0).build()
}

#[async_trait]
impl Audiences for EmbeddedStore {
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
}

#[async_trait]
impl Checkpoints for EmbeddedStore {
    async fn get_checkpoint(&self, tenant: TenantId, campaign: CampaignId) -> Result<ChunkCheckpoint> {
        Ok(get(&self.checkpoints, &child_key(tenant, campaign.0))?.unwrap_or_default())
    }

    async fn put_checkpoint(&self, tenant: TenantId, campaign: CampaignId, checkpoint: ChunkCheckpoint) -> Result<()> {
        let mut batch = self.batch();
        put(&mut batch, &self.checkpoints, child_key(tenant, campaign.0), &checkpoint)?;
        Ok(batch.commit()?)
    }
}
