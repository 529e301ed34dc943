//! `Audiences` and `Checkpoints` on ScyllaDB: recipients bucketed by id (a chunk read is a
//! range read of one partition, then the next), the sharded address index that dedupes
//! imports, chunk checkpoints.

use super::log::Partitions;
use super::{big, body, from_body, ScyllaStore};
use crate::model::*;
use crate::{bucket_of, Audiences, Checkpoints, Error, Result};
use async_trait::async_trait;
use schemas::*;
use std::collections::{HashMap, HashSet};

/// Shards of an audience's address index (see the schema).
pub(super) const ADDRESS_SHARDS: u32 = 64;

fn shard_of(address: &str) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(address.as_bytes()) % u64::from(ADDRESS_SHARDS)) as i32
}

#[async_trait]
impl Audiences for ScyllaStore {
    async fn put_audience(&self, audience: &Audience) -> Result<()> {
        self.exec(&self.st.put_audience, (big(audience.tenant.0), big(audience.id.0), body(audience)?)).await
    }

    async fn get_audience(&self, tenant: TenantId, id: AudienceId) -> Result<Option<Audience>> {
        match self.rows::<(Vec<u8>,)>(&self.st.get_audience, (big(tenant.0), big(id.0))).await?.first() {
            Some((b,)) => Ok(Some(from_body(b)?)),
            None => Ok(None),
        }
    }

    async fn list_audiences(&self, tenant: TenantId) -> Result<Vec<Audience>> {
        let rows = self.paged::<(Vec<u8>,)>(&self.st.list_audiences, (big(tenant.0),)).await?;
        rows.iter().map(|(b,)| from_body(b)).collect()
    }

    async fn add_recipients(
        &self,
        tenant: TenantId,
        audience: AudienceId,
        recipients: Vec<NewRecipient>,
    ) -> Result<AddedRecipients> {
        let (t, a) = (big(tenant.0), big(audience.0));
        let mut row = self
            .get_audience(tenant, audience)
            .await?
            .ok_or_else(|| Error::NotFound { what: "audience", id: audience.to_string() })?;
        // Which addresses the audience has already: one read per shard touched.
        let mut by_shard: HashMap<i32, Vec<String>> = HashMap::new();
        for r in &recipients {
            by_shard.entry(shard_of(&r.address)).or_default().push(r.address.clone());
        }
        let mut known = HashSet::new();
        for (shard, addresses) in by_shard {
            let found = self.rows::<(String,)>(&self.st.find_addresses, (t, a, shard, addresses)).await?;
            known.extend(found.into_iter().map(|(addr,)| addr));
        }
        let mut added = AddedRecipients::default();
        let mut rows = Partitions::new();
        let mut index = Partitions::new();
        for r in recipients {
            if !known.insert(r.address.clone()) {
                added.duplicates += 1;
                continue;
            }
            let id = RecipientId(row.next_recipient_id);
            row.next_recipient_id += 1;
            let (bucket, shard) = (bucket_of(id) as i32, shard_of(&r.address));
            index.add(shard, (t, a, shard, r.address.clone(), big(id.0)));
            rows.add(bucket, (t, a, bucket, big(id.0), r.address, body(&r.attrs)?));
            added.added += 1;
        }
        let n = self.config.max_concurrent_writes;
        rows.write(self, &self.st.put_recipient, n).await?;
        index.write(self, &self.st.put_address, n).await?;
        // The audience row last: a crash leaves rows past the count, never a count past rows.
        row.recipient_count += added.added;
        self.put_audience(&row).await?;
        Ok(added)
    }

    async fn read_recipients(
        &self,
        tenant: TenantId,
        audience: AudienceId,
        from: RecipientId,
        limit: usize,
    ) -> Result<Vec<Recipient>> {
        let Some(row) = self.get_audience(tenant, audience).await? else { return Ok(Vec::new()) };
        let (t, a) = (big(tenant.0), big(audience.0));
        let last_bucket = bucket_of(RecipientId(row.next_recipient_id.saturating_sub(1)));
        let mut out = Vec::new();
        let mut bucket = bucket_of(from);
        while out.len() < limit && bucket <= last_bucket && from.0 < row.next_recipient_id {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let rows = self
                .rows::<(i64, String, Vec<u8>)>(&self.st.read_recipients, (t, a, bucket as i32, big(from.0), want))
                .await?;
            for (id, address, attrs) in rows {
                let id = RecipientId(id as u64);
                out.push(Recipient { id, bucket: bucket_of(id), address, attrs: from_body(&attrs)? });
            }
            bucket += 1;
        }
        Ok(out)
    }
}

#[async_trait]
impl Checkpoints for ScyllaStore {
    async fn get_checkpoint(&self, tenant: TenantId, campaign: CampaignId) -> Result<ChunkCheckpoint> {
        match self.rows::<(Vec<u8>,)>(&self.st.get_checkpoint, (big(tenant.0), big(campaign.0))).await?.first() {
            Some((b,)) => from_body(b),
            None => Ok(ChunkCheckpoint::default()),
        }
    }

    async fn put_checkpoint(&self, tenant: TenantId, campaign: CampaignId, checkpoint: ChunkCheckpoint) -> Result<()> {
        self.exec(&self.st.put_log_campaign, (big(tenant.0), big(campaign.0))).await?;
        self.exec(&self.st.put_checkpoint, (big(tenant.0), big(campaign.0), body(&checkpoint)?)).await
    }
}
