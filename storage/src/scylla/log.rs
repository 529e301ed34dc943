//! `MessageLog` on ScyllaDB: message rows with a TTL, the tenant-scoped provider-id index,
//! counters (a regular column, written by reconcile, the campaign's single writer), DLQ
//! entries. `apply` writes one unlogged batch per partition, at most `max_concurrent_writes`
//! at a time, and the counters only after everything else is written.

use super::catalog::PROVIDER_ID_SHARDS;
use super::{big, body, from_body, unavailable, ScyllaStore};
use crate::model::*;
use crate::{MessageLog, Result};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use schemas::*;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use std::collections::{BTreeMap, BTreeSet};

fn id_bytes(id: MessageId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

fn id_of(bytes: &[u8]) -> Result<MessageId> {
    let raw: [u8; 16] = bytes.try_into().map_err(|_| unavailable("read", "a message id that is not 16 bytes"))?;
    Ok(MessageId(u128::from_be_bytes(raw)))
}

/// A journal entry's id: the time first (entries sort oldest first), then 8 random bytes.
fn journal_id() -> Vec<u8> {
    let mut id = now_ms().to_be_bytes().to_vec();
    id.extend_from_slice(&rand::random::<u64>().to_be_bytes());
    id
}

fn shard_of(provider_id: &str) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(provider_id.as_bytes()) % u64::from(PROVIDER_ID_SHARDS)) as i32
}

/// Rows for one statement, grouped by partition: each group is one unlogged batch (atomic and
/// applied once on its replica set).
pub(super) struct Partitions<K: Ord, V> {
    groups: BTreeMap<K, Vec<V>>,
}

impl<K: Ord, V: SerializeRow + Send + Sync> Partitions<K, V> {
    pub(super) fn new() -> Self {
        Self { groups: BTreeMap::new() }
    }
    pub(super) fn add(&mut self, partition: K, values: V) {
        self.groups.entry(partition).or_default().push(values);
    }
    /// Writes every group, `concurrency` batches in flight at most.
    pub(super) async fn write(self, store: &ScyllaStore, st: &PreparedStatement, concurrency: usize) -> Result<()> {
        futures::stream::iter(self.groups.into_values())
            .map(|rows| async move {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in &rows {
                    batch.append_statement(st.clone());
                }
                batch.set_consistency(store.config.consistency);
                store.session.batch(&batch, &rows).await.map_err(|e| unavailable("batch write", e)).map(|_| ())
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl MessageLog for ScyllaStore {
    async fn get_messages(&self, keys: &[MessageKey]) -> Result<Vec<Option<MessageRecord>>> {
        let reads = keys.iter().copied().map(|k| async move {
            let values = (big(k.tenant.0), big(k.campaign.0), k.bucket as i32, id_bytes(k.id));
            match self.rows::<(Vec<u8>,)>(&self.st.get_message, values).await?.first() {
                Some((b,)) => Ok(Some(from_body(b)?)),
                None => Ok(None),
            }
        });
        futures::stream::iter(reads).buffered(self.config.max_concurrent_writes.max(1)).try_collect().await
    }

    async fn lookup_provider_ids(
        &self,
        tenant: TenantId,
        provider: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<MessageKey>>> {
        let provider = provider.to_string();
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let reads = ids.into_iter().map(|id| {
            let provider = provider.clone();
            async move {
                let values = (big(tenant.0), shard_of(&id), provider, id);
                match self.rows::<(Vec<u8>,)>(&self.st.get_provider_id, values).await?.first() {
                    Some((b,)) => Ok(Some(from_body(b)?)),
                    None => Ok(None),
                }
            }
        });
        futures::stream::iter(reads).buffered(self.config.max_concurrent_writes.max(1)).try_collect().await
    }

    async fn get_counters(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<CampaignCounters>> {
        match self.rows::<(Vec<u8>,)>(&self.st.get_counters, (big(tenant.0), big(campaign.0))).await?.first() {
            Some((b,)) => Ok(Some(from_body(b)?)),
            None => Ok(None),
        }
    }

    async fn get_timeline(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, CampaignCounters)>> {
        let after = after_ms.map_or(-1, big);
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows =
            self.rows::<(i64, Vec<u8>)>(&self.st.get_timeline, (big(tenant.0), big(campaign.0), after, limit)).await?;
        rows.into_iter().map(|(at, b)| Ok((at as u64, from_body(&b)?))).collect()
    }

    async fn settle(&self, tenant: TenantId, campaign: CampaignId) -> Result<()> {
        let (t, c) = (big(tenant.0), big(campaign.0));
        // Oldest first; a campaign has at most one entry unless a settle itself failed midway,
        // and then the entries are its newest writes (nothing newer runs before settle ends).
        for (id, b) in self.rows::<(Vec<u8>, Vec<u8>)>(&self.st.get_journal, (t, c)).await? {
            let part: LogBatch = from_body(&b)?;
            tracing::warn!(%tenant, %campaign, rows = part.writes.len(), "finishing a message-log write a crash or an error cut short");
            self.write_parts(&part).await?;
            self.exec(&self.st.delete_journal, (t, c, id)).await?;
        }
        Ok(())
    }

    async fn apply(&self, batch: LogBatch) -> Result<()> {
        // Journal first (each campaign's part as one row of its own journal partition), then
        // the parts, then the journal entries go: a crash or error in between leaves an entry
        // that `settle` writes again in full before reconcile reads the campaign's rows.
        let parts = batch.by_campaign();
        let id = self.journal(&parts).await?;
        // A campaign at a time (a step rarely spans more than a few), each part's writes still
        // `max_concurrent_writes` in flight.
        for part in parts.values() {
            self.write_parts(part).await?;
        }
        let mut done = Partitions::new();
        for (tenant, campaign) in parts.keys() {
            let (t, c) = (big(tenant.0), big(campaign.0));
            done.add((t, c), (t, c, id.clone()));
        }
        done.write(self, &self.st.delete_journal, self.config.max_concurrent_writes).await
    }

    async fn scan_messages(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        after: Option<(u32, MessageId)>,
        limit: usize,
    ) -> Result<Vec<(MessageKey, MessageRecord)>> {
        let (t, c) = (big(tenant.0), big(campaign.0));
        let mut buckets: Vec<u32> =
            self.rows::<(i32,)>(&self.st.list_buckets, (t, c)).await?.into_iter().map(|(b,)| b as u32).collect();
        buckets.sort_unstable();
        let mut out = Vec::new();
        for bucket in buckets {
            if out.len() >= limit {
                break;
            }
            let from = match after {
                Some((b, _)) if bucket < b => continue,
                Some((b, id)) if bucket == b => id_bytes(id),
                _ => Vec::new(),
            };
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let rows =
                self.rows::<(Vec<u8>, Vec<u8>)>(&self.st.scan_messages, (t, c, bucket as i32, from, want)).await?;
            for (id, record) in rows {
                out.push((MessageKey { tenant, campaign, bucket, id: id_of(&id)? }, from_body(&record)?));
            }
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
        let from = after.map(id_bytes).unwrap_or_default();
        let want = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let rows = self.rows::<(Vec<u8>,)>(&self.st.scan_dlq, (big(tenant.0), big(campaign.0), from, want)).await?;
        rows.iter().map(|(b,)| from_body(b)).collect()
    }
}

impl ScyllaStore {
    /// Writes each campaign's part to its journal partition under one new id, and returns it.
    async fn journal(&self, parts: &BTreeMap<(TenantId, CampaignId), LogBatch>) -> Result<Vec<u8>> {
        let id = journal_id();
        let mut journal = Partitions::new();
        for ((tenant, campaign), part) in parts {
            let (t, c) = (big(tenant.0), big(campaign.0));
            journal.add((t, c), (t, c, id.clone(), body(part)?, self.ttl()));
        }
        journal.write(self, &self.st.put_journal, self.config.max_concurrent_writes).await?;
        Ok(id)
    }

    /// Writes a batch's parts: rows, buckets, index, DLQ, timeline, then counters.
    async fn write_parts(&self, batch: &LogBatch) -> Result<()> {
        let (ttl, n) = (self.ttl(), self.config.max_concurrent_writes);
        let mut messages = Partitions::new();
        let mut buckets = BTreeSet::new();
        let mut index = Partitions::new();
        // Registered first: a purge must find every campaign that has rows.
        let touched: BTreeSet<(i64, i64)> = batch
            .writes
            .iter()
            .map(|w| (w.key.tenant, w.key.campaign))
            .chain(batch.dead_letters.iter().map(|e| (e.key.tenant, e.key.campaign)))
            .chain(batch.counters.iter().map(|(t, c, _)| (*t, *c)))
            .map(|(t, c)| (big(t.0), big(c.0)))
            .collect();
        let mut campaigns = Partitions::new();
        for (t, c) in touched {
            campaigns.add(t, (t, c));
        }
        campaigns.write(self, &self.st.put_log_campaign, n).await?;
        for w in &batch.writes {
            let (t, c, b) = (big(w.key.tenant.0), big(w.key.campaign.0), w.key.bucket as i32);
            messages.add((t, c, b), (t, c, b, id_bytes(w.key.id), body(&w.record)?, ttl));
            buckets.insert((t, c, b));
            if let Some((provider, id)) = &w.index {
                let shard = shard_of(id);
                index.add((t, shard), (t, shard, provider.clone(), id.clone(), body(&w.key)?, ttl));
            }
        }
        let mut cleared = Partitions::new();
        for k in &batch.cleared_dead_letters {
            let (t, c) = (big(k.tenant.0), big(k.campaign.0));
            cleared.add((t, c), (t, c, id_bytes(k.id)));
        }
        let mut letters = Partitions::new();
        for e in &batch.dead_letters {
            let (t, c) = (big(e.key.tenant.0), big(e.key.campaign.0));
            letters.add((t, c), (t, c, id_bytes(e.key.id), body(e)?));
        }
        messages.write(self, &self.st.put_message, n).await?;
        let mut bucket_rows = Partitions::new();
        for (t, c, b) in buckets {
            bucket_rows.add((t, c), (t, c, b, ttl));
        }
        bucket_rows.write(self, &self.st.put_bucket, n).await?;
        index.write(self, &self.st.put_provider_id, n).await?;
        // Removed before added: a letter cleared and dead again in one batch stays.
        cleared.write(self, &self.st.delete_dlq, n).await?;
        letters.write(self, &self.st.put_dlq, n).await?;
        let (mut counters, mut timeline) = (Partitions::new(), Partitions::new());
        let window = big(timeline_window(batch.at_ms));
        for (tenant, campaign, value) in &batch.counters {
            let (t, c, value) = (big(tenant.0), big(campaign.0), body(value)?);
            timeline.add((t, c), (t, c, window, value.clone(), ttl));
            counters.add((t, c), (t, c, value));
        }
        timeline.write(self, &self.st.put_timeline, n).await?;
        counters.write(self, &self.st.put_counters, n).await
    }

    /// Stops right after the rows, as a crash there would (for the settle test).
    #[cfg(test)]
    pub(crate) async fn apply_until_rows(&self, batch: LogBatch) -> Result<()> {
        let n = self.config.max_concurrent_writes;
        self.journal(&batch.clone().by_campaign()).await?;
        let mut messages = Partitions::new();
        for w in &batch.writes {
            let (t, c, b) = (big(w.key.tenant.0), big(w.key.campaign.0), w.key.bucket as i32);
            messages.add((t, c, b), (t, c, b, id_bytes(w.key.id), body(&w.record)?, self.ttl()));
        }
        messages.write(self, &self.st.put_message, n).await
    }
}
