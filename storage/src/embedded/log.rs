//! `MessageLog` on the embedded store: rows, the tenant-scoped provider-id index, counters and
//! DLQ entries, each `apply` one atomic batch.

use super::keys::{self, read_u64, Key};
use super::{
    bucket_fingerprints, get, get_message, parse_message_key, put, put_message, scan, split_check, EmbeddedStore,
};
use crate::model::*;
use crate::{MessageLog, Result};
use async_trait::async_trait;
use schemas::*;
use serde::{Deserialize, Serialize};

fn campaign_key(t: TenantId, c: CampaignId) -> Vec<u8> {
    Key::new().u64(t.0).u64(c.0).build()
}
/// A timeline point lives next to its campaign's counters row, under the counters key plus
/// its window, so a tenant purge removes both and a point read never touches another keyspace.
fn timeline_key(t: TenantId, c: CampaignId, window_ms: u64) -> Vec<u8> {
    Key::new().u64(t.0).u64(c.0).u64(window_ms).build()
}
/// The provider-id index key, `(tenant, 96 bits of xxh3-128 of provider and id)`: 20 bytes,
/// byteview's inline size, so a compaction of this keyspace (random keys: it rewrites whole
/// levels) copies its keys instead of holding views that keep input blocks alive. The other
/// 32 bits are the entry's `check`.
pub(super) fn provider_key(tenant: TenantId, provider: &str, id: &str) -> (Vec<u8>, u32) {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(provider.len() as u64).to_le_bytes());
    hasher.update(provider.as_bytes());
    hasher.update(id.as_bytes());
    let hash = hasher.digest128();
    (Key::new().u64(tenant.0).u64((hash >> 64) as u64).u32((hash >> 32) as u32).build(), hash as u32)
}
/// The key an older store's index used ([`super::LEGACY_PROVIDER_IDS`]).
pub(super) fn legacy_provider_key(tenant: TenantId, provider: &str, id: &str) -> Vec<u8> {
    Key::new().u64(tenant.0).str(provider).str(id).build()
}

/// A provider-id index entry. A lookup takes it only when `check` matches too, so two provider
/// ids are confused only if all 128 bits of their hashes are (as two message ids would be).
#[derive(Serialize, Deserialize)]
pub(super) struct ProviderIdEntry {
    pub key: MessageKey,
    pub check: u32,
}
fn dlq_key(k: &MessageKey) -> Vec<u8> {
    Key::new().u64(k.tenant.0).u64(k.campaign.0).u128(k.id.0).build()
}

#[async_trait]
impl MessageLog for EmbeddedStore {
    async fn get_messages(&self, keys: &[MessageKey]) -> Result<Vec<Option<MessageRecord>>> {
        // Which rows may exist, decided first so the reads below do not hold the lock.
        let known: Vec<Option<bool>> = {
            let mut presence = self.row_presence.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().map(|k| presence.may_exist(k)).collect()
        };
        let rows = keys
            .iter()
            .zip(&known)
            .map(|(k, known)| if *known == Some(false) { Ok(None) } else { get_message(&self.messages, k) })
            .collect::<Result<Vec<Option<MessageRecord>>>>()?;
        // A miss in a bucket not loaded: first writes are under way there, so load it.
        let mut presence = None;
        for ((key, known), row) in keys.iter().zip(&known).zip(&rows) {
            if known.is_none() && row.is_none() {
                let presence =
                    presence.get_or_insert_with(|| self.row_presence.lock().unwrap_or_else(|p| p.into_inner()));
                presence.load(key, || bucket_fingerprints(&self.messages, key))?;
            }
        }
        Ok(rows)
    }

    async fn lookup_provider_ids(
        &self,
        tenant: TenantId,
        provider: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<MessageKey>>> {
        ids.iter()
            .map(|id| {
                let (index_key, check) = provider_key(tenant, provider, id);
                let entry: Option<ProviderIdEntry> = get(&self.provider_ids, &index_key)?;
                match (entry, &self.legacy_provider_ids) {
                    (Some(entry), _) if entry.check == check => Ok(Some(entry.key)),
                    (_, Some(legacy)) => get(legacy, &legacy_provider_key(tenant, provider, id)),
                    _ => Ok(None),
                }
            })
            .collect()
    }

    async fn get_counters(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignCounters>> {
        get(&self.counters, &campaign_key(tenant, campaign))
    }

    async fn get_timeline(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, CampaignCounters)>> {
        // Starts past the 16-byte counters row, which sorts before every point of its campaign.
        let start = timeline_key(tenant, campaign, after_ms.map_or(0, |a| a.saturating_add(1)));
        Ok(scan(&self.counters, &campaign_key(tenant, campaign), start, limit)?
            .into_iter()
            .map(|(k, counters)| (read_u64(&k, 16), counters))
            .collect())
    }

    async fn settle(&self, _tenant: TenantId, _campaign: CampaignId) -> Result<()> {
        // `apply` is one atomic write batch here: nothing is ever cut short.
        Ok(())
    }

    async fn apply(&self, batch: LogBatch) -> Result<()> {
        self.within_budget().await;
        let mut wb = self.batch();
        for w in &batch.writes {
            put_message(&mut wb, &self.messages, &w.key, &w.record)?;
            if let Some((provider, id)) = &w.index {
                let (index_key, check) = provider_key(w.key.tenant, provider, id);
                put(&mut wb, &self.provider_ids, index_key, &ProviderIdEntry { key: w.key, check })?;
            }
        }
        let rows: Vec<MessageKey> = batch.writes.iter().map(|w| w.key).collect();
        for (tenant, campaign, counters) in &batch.counters {
            put(&mut wb, &self.counters, campaign_key(*tenant, *campaign), counters)?;
            put(&mut wb, &self.counters, timeline_key(*tenant, *campaign, timeline_window(batch.at_ms)), counters)?;
        }
        for key in &batch.cleared_dead_letters {
            wb.remove(&self.dlq, dlq_key(key));
        }
        for entry in &batch.dead_letters {
            put(&mut wb, &self.dlq, dlq_key(&entry.key), entry)?;
        }
        // Known to the presence sets before the commit, and kept from being dropped until it
        // is done (see `presence`); the one writer per campaign reads them only after.
        self.row_presence.lock().unwrap_or_else(|p| p.into_inner()).writing(&rows);
        let committed = wb.commit();
        self.row_presence.lock().unwrap_or_else(|p| p.into_inner()).written(&rows);
        Ok(committed?)
    }

    async fn scan_messages(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after: Option<(u32, MessageId)>,
        limit: usize,
    ) -> Result<Vec<(MessageKey, MessageRecord)>> {
        let prefix = keys::short_campaign(tenant, campaign);
        let start = match after {
            // The smallest key after (bucket, id): the same key with one more byte.
            Some((bucket, id)) => {
                let mut k = keys::short_message(&MessageKey { tenant, campaign, bucket, id });
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let rows = match keys::prefix_end(&prefix) {
            Some(end) => self.messages.range(start..end),
            None => self.messages.range(start..),
        };
        let mut out = Vec::new();
        for guard in rows.take(limit) {
            let (k, v) = guard.into_inner()?;
            let (_, _, bucket, id) = parse_message_key(&k)?;
            let (check, value) = split_check(&v)?;
            let key = MessageKey { tenant, campaign, bucket, id: MessageId(id | u128::from(check)) };
            out.push((key, schemas::codec::decode(value)?));
        }
        Ok(out)
    }

    async fn scan_dlq(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<DlqEntry>> {
        let prefix = campaign_key(tenant, campaign);
        let start = match after {
            Some(id) => {
                let mut k = Key::new().u64(tenant.0).u64(campaign.0).u128(id.0).build();
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        Ok(scan(&self.dlq, &prefix, start, limit)?.into_iter().map(|(_, e)| e).collect())
    }
}
