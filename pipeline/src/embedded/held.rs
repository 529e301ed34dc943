//! The runners' held store on the embedded topics' database: records under
//! `(group, partition, lane, seq)` and a summary row per lane (count, last seq) written in the
//! same atomic batch, so `lanes` answers without scanning held records. Reads of a lane start
//! at its floor (see [`EmbeddedHeld`]), not at seq 0.

use super::EmbeddedTopics;
use crate::held::{HeldLane, HeldRecord, HeldRecords};
use crate::stage::Lane;
use crate::topic::Partition;
use crate::Result;
use async_trait::async_trait;
use schemas::codec;
use schemas::envelope::Headers;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
