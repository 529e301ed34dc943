//! The runners' held store on the embedded topics' database: records under
//! `(group, partition, lane, seq)` and a summary row per lane (count, last seq) written in the
//! same atomic batch, so `lanes` answers without scanning held records. Reads of a lane start
//! at its floor (see [`EmbeddedHeld`]), not at seq 0.
//!
//! **Tables of 8 MiB, their index partitioned beyond L0** ([`open_keyspace`]). Held records are
//! whole topic records (batches of messages), so a data block here is mostly one record, and
//! lsm-tree's table writer keeps each output block's last key as a view into the input block it
//! was read from until the index that names it is written. With fjall's defaults (tables of
//! 64 MiB, one index per table below L3) a compaction kept every input block of the table it was
//! writing alive: at 10M x 4 the highest RSS samples (every 100 ms) of two runs all fell while
//! this keyspace wrote a table of 37-64 MiB (ARCHITECTURE.md, "Held records' compactions").
//! A store created before keeps those settings in its `held` keyspace (fjall fixes them at
//! creation), so an open moves its rows here and drops it.

use super::EmbeddedTopics;
use crate::held::{HeldLane, HeldRecord, HeldRecords};
use crate::stage::Lane;
use crate::topic::Partition;
use crate::Result;
use async_trait::async_trait;
use fjall::compaction::Leveled;
use fjall::config::{PartitioningPolicy, PinningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use schemas::codec;
use schemas::envelope::Headers;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The held records' keyspace, with [`open_keyspace`]'s settings.
const HELD: &str = "held_small_tables";
/// The keyspace a store created before those settings holds its records in.
const LEGACY_HELD: &str = "held";
/// Target size of a held table beyond L0 (fjall's default is 64 MiB): what one compaction's
/// table writer can keep of its input at a time.
const TABLE_BYTES: u64 = 8 << 20;
/// Bytes of rows moved per write batch when an older store's records move.
const MOVE_BATCH_BYTES: usize = 4 << 20;

/// Opens the held records' keyspace (see the module docs), first moving an older store's rows
/// into it. The move is idempotent: the old keyspace is dropped only after every row is written
/// and synced, so an open cut short moves them again.
pub(super) fn open_keyspace(db: &Database, memtable_bytes: u64) -> Result<Keyspace> {
    let held = db.keyspace(HELD, || {
        KeyspaceCreateOptions::default()
            .max_memtable_size(memtable_bytes)
            // Index and filter blocks go through the bounded block cache instead of being
            // pinned: pinned blocks grow with the data, the cache does not (L0 included, as
            // the store's keyspaces: `storage/src/embedded/mod.rs`).
            .index_block_pinning_policy(PinningPolicy::all(false))
            .filter_block_pinning_policy(PinningPolicy::all(false))
            .index_block_partitioning_policy(PartitioningPolicy::new([false, true]))
            .compaction_strategy(Arc::new(Leveled::default().with_table_target_size(TABLE_BYTES)))
    })?;
    if db.keyspace_exists(LEGACY_HELD) {
        let old = db.keyspace(LEGACY_HELD, KeyspaceCreateOptions::default)?;
        let (mut batch, mut bytes, mut moved) = (db.batch(), 0, 0u64);
        for guard in old.iter() {
            let (k, v) = guard.into_inner()?;
            bytes += k.len() + v.len();
            moved += 1;
            batch.insert(&held, k, v);
            if bytes >= MOVE_BATCH_BYTES {
                std::mem::replace(&mut batch, db.batch()).commit()?;
                bytes = 0;
            }
        }
        batch.commit()?;
        db.persist(PersistMode::SyncAll)?;
        db.delete_keyspace(old)?;
        if moved > 0 {
            tracing::info!(rows = moved, "moved held records into tables of {} MiB", TABLE_BYTES >> 20);
        }
    }
    Ok(held)
}

/// Held records in the embedded topics' fjall database.
pub struct EmbeddedHeld {
    topics: Arc<EmbeddedTopics>,
    /// Per non-empty lane, a seq below which the lane holds no record. Released records leave
    /// tombstones under the lane's prefix until compaction drops them, and a range read from
    /// seq 0 walked every one of them, so a held record cost more the more records its
    /// campaign had released before it. Learnt when a hold finds the lane empty (its records
    /// are then the lane) or a release passes it, forgotten when the lane empties or grows at
    /// its front; a lane not known here (after a restart) is read from 0 until its next
    /// release. Changed only under `write_lock`. Bounded by the lanes holding records.
    floors: Mutex<HashMap<(String, Partition, Lane), u64>>,
}

const RECORD: u8 = b'r';
const SUMMARY: u8 = b's';

fn prefix(kind: u8, group: &str, partition: Partition) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + 14);
    k.push(kind);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn lane_key(kind: u8, group: &str, partition: Partition, lane: Lane) -> Vec<u8> {
    let mut k = prefix(kind, group, partition);
    k.extend_from_slice(&lane.0.to_be_bytes());
    k
}

fn record_key(group: &str, partition: Partition, lane: Lane, seq: u64) -> Vec<u8> {
    let mut k = lane_key(RECORD, group, partition, lane);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn tail_u64(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&key[key.len() - 8..]);
    u64::from_be_bytes(buf)
}

type Stored = (u64, u64, Headers, Vec<u8>);

fn decode(seq: u64, bytes: &[u8]) -> Result<HeldRecord> {
    let (due_ms, key, headers, value): Stored = codec::decode(bytes)?;
    Ok(HeldRecord { seq, due_ms, key, headers, value })
}

impl EmbeddedHeld {
    pub(super) fn new(topics: Arc<EmbeddedTopics>) -> Self {
        Self { topics, floors: Mutex::new(HashMap::new()) }
    }

    fn floor(&self, group: &str, partition: Partition, lane: Lane) -> u64 {
        let floors = super::lock(&self.floors);
        floors.get(&(group.to_owned(), partition, lane)).copied().unwrap_or(0)
    }

    /// Sets (`Some`) or forgets (`None`) a lane's floor; callers hold `write_lock`.
    fn set_floor(&self, group: &str, partition: Partition, lane: Lane, floor: Option<u64>) {
        let mut floors = super::lock(&self.floors);
        let key = (group.to_owned(), partition, lane);
        match floor {
            Some(f) => floors.insert(key, f),
            None => floors.remove(&key),
        };
    }

    fn summary(&self, group: &str, partition: Partition, lane: Lane) -> Result<(u64, u64)> {
        match self.topics.held.get(lane_key(SUMMARY, group, partition, lane))? {
            Some(v) => Ok(codec::decode(&v)?),
            None => Ok((0, 0)),
        }
    }
}

#[async_trait]
impl HeldRecords for EmbeddedHeld {
    async fn hold(&self, group: &str, partition: Partition, lane: Lane, records: Vec<HeldRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.topics.within_budget().await;
        let _guard = super::lock(&self.topics.write_lock);
        let (count, last) = self.summary(group, partition, lane)?;
        let lowest = records.iter().map(|r| r.seq).min().unwrap_or(0);
        if count == 0 {
            // The lane is empty: the records held now are all of it.
            self.set_floor(group, partition, lane, Some(lowest));
        } else if lowest < self.floor(group, partition, lane) {
            // The lane grew at its front (records set aside while waiting): forget the floor,
            // before the records are visible, rather than hide them.
            self.set_floor(group, partition, lane, None);
        }
        let mut batch = self.topics.batch();
        let mut added = 0;
        let mut last_seq = last;
        for r in &records {
            let key = record_key(group, partition, lane, r.seq);
            if !self.topics.held.contains_key(&key)? {
                added += 1;
            }
            last_seq = last_seq.max(r.seq);
            batch.insert(&self.topics.held, key, codec::encode(&(r.due_ms, r.key, &r.headers, &r.value))?);
        }
        batch.insert(
            &self.topics.held,
            lane_key(SUMMARY, group, partition, lane),
            codec::encode(&(count + added, last_seq))?,
        );
        batch.commit()?;
        Ok(())
    }

    async fn update(&self, group: &str, partition: Partition, lane: Lane, record: HeldRecord) -> Result<()> {
        let _guard = super::lock(&self.topics.write_lock);
        let key = record_key(group, partition, lane, record.seq);
        if !self.topics.held.contains_key(&key)? {
            return Ok(());
        }
        let mut batch = self.topics.batch();
        batch.insert(
            &self.topics.held,
            key,
            codec::encode(&(record.due_ms, record.key, &record.headers, &record.value))?,
        );
        batch.commit()?;
        Ok(())
    }

    async fn peek(&self, group: &str, partition: Partition, lane: Lane, limit: usize) -> Result<Vec<HeldRecord>> {
        let start = record_key(group, partition, lane, self.floor(group, partition, lane));
        let end = record_key(group, partition, lane, u64::MAX);
        let mut out = Vec::new();
        for guard in self.topics.held.range(start..=end).take(limit) {
            let (k, v) = guard.into_inner()?;
            out.push(decode(tail_u64(&k), &v)?);
        }
        Ok(out)
    }

    async fn release(&self, group: &str, partition: Partition, lane: Lane, through: u64) -> Result<()> {
        let _guard = super::lock(&self.topics.write_lock);
        let floor = self.floor(group, partition, lane);
        let start = record_key(group, partition, lane, floor);
        let end = record_key(group, partition, lane, through);
        let keys = self.topics.held.range(start..=end).map(|g| g.key()).collect::<std::result::Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        let (count, last) = self.summary(group, partition, lane)?;
        let left = count.saturating_sub(keys.len() as u64);
        let mut batch = self.topics.batch();
        for k in keys {
            batch.remove(&self.topics.held, k);
        }
        let summary = lane_key(SUMMARY, group, partition, lane);
        if left == 0 {
            batch.remove(&self.topics.held, summary);
        } else {
            batch.insert(&self.topics.held, summary, codec::encode(&(left, last))?);
        }
        batch.commit()?;
        self.set_floor(group, partition, lane, (left > 0).then(|| through.saturating_add(1).max(floor)));
        Ok(())
    }

    async fn lanes(&self, group: &str, partition: Partition) -> Result<Vec<HeldLane>> {
        let mut out = Vec::new();
        for guard in self.topics.held.prefix(prefix(SUMMARY, group, partition)) {
            let (k, v) = guard.into_inner()?;
            let lane = Lane(tail_u64(&k));
            let (count, last_seq): (u64, u64) = codec::decode(&v)?;
            let first = self.peek(group, partition, lane, 1).await?;
            let first_due_ms = first.first().map(|r| r.due_ms).unwrap_or(0);
            out.push(HeldLane { lane, count, last_seq, first_due_ms });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    fn stored(seq: u64) -> Vec<u8> {
        codec::encode(&(seq * 10, seq, Headers::default(), vec![seq as u8])).unwrap()
    }

    #[tokio::test]
    async fn held_records_of_an_older_store_move_to_small_tables() {
        let dir = tempfile::tempdir().unwrap();
        let (group, partition, lane) = ("g", 1, Lane(7));
        {
            // A move cut short: the old keyspace still holds every row, the new one part of them.
            let db = Database::builder(dir.path()).open().unwrap();
            let new = open_keyspace(&db, 1 << 20).unwrap();
            new.insert(record_key(group, partition, lane, 4), stored(4)).unwrap();
            let old = db.keyspace(LEGACY_HELD, KeyspaceCreateOptions::default).unwrap();
            for seq in 3..7u64 {
                old.insert(record_key(group, partition, lane, seq), stored(seq)).unwrap();
            }
            old.insert(lane_key(SUMMARY, group, partition, lane), codec::encode(&(4u64, 6u64)).unwrap()).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        for _ in 0..2 {
            let topics = super::super::EmbeddedTopics::open_with_consumers(
                dir.path(),
                &conformance::specs(),
                &conformance::consumers(),
                Default::default(),
            )
            .unwrap();
            assert!(!topics.db.keyspace_exists(LEGACY_HELD), "the old keyspace is dropped once moved");
            let held = topics.held();
            let lanes = held.lanes(group, partition).await.unwrap();
            assert_eq!(lanes.len(), 1);
            assert_eq!((lanes[0].lane, lanes[0].count, lanes[0].last_seq, lanes[0].first_due_ms), (lane, 4, 6, 30));
            let got = held.peek(group, partition, lane, 10).await.unwrap();
            assert_eq!(
                got.iter().map(|r| (r.seq, r.due_ms, r.key, r.value.clone())).collect::<Vec<_>>(),
                (3..7u64).map(|s| (s, s * 10, s, vec![s as u8])).collect::<Vec<_>>()
            );
            held.release(group, partition, lane, 4).await.unwrap();
            assert_eq!(held.peek(group, partition, lane, 10).await.unwrap().len(), 2, "released where they now are");
            held.hold(group, partition, lane, got[..2].to_vec()).await.unwrap();
        }
    }
}
