//! The runners' held store ([`pipeline::HeldRecords`]) on ScyllaDB, for the distributed
//! deployment: a worker that takes over a partition finds the lanes its predecessor set aside.
//!
//! Records live in one partition per `(group, partition, lane)`, clustered by seq; a summary
//! row per lane (count, last seq, first due time) lets a worker that takes a partition over
//! find its lanes. The summary is rewritten from the records after every write (first record,
//! last seq; seqs are contiguous), never counted incrementally: an earlier version kept a
//! running count, and a count that drifted low deleted the summary of a lane that still had
//! records, so the next owner never found them (seen in the multi-process kill test: 14,000
//! messages stranded). `peek` reads records, not the summary.

use super::{body, from_body, ScyllaStore};
use async_trait::async_trait;
use pipeline::held::HeldLane;
use pipeline::{HeldRecord, HeldRecords, Lane, Partition};
use schemas::envelope::Headers;

type Stored = (u64, Headers, Vec<u8>);

use crate::state::pipeline_error as fail;

fn seq(v: u64) -> i64 {
    v as i64
}

impl ScyllaStore {
    /// This process's lock on a held lane's writes.
    fn held_lock(&self, group: &str, partition: Partition, lane: Lane) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (group, partition, lane.0).hash(&mut hasher);
        &self.held_locks[(hasher.finish() % self.held_locks.len() as u64) as usize]
    }

    /// Rewrites the lane's summary from its records: the first record (seq, due time) and the
    /// last seq, which is the summary's unless records lie beyond it (a crash between the
    /// records and the summary). Seqs are contiguous (appended after the last, set aside in
    /// front of the first, released from the front), so the count is `last - first + 1`.
    /// Nothing is counted incrementally, so nothing can drift, and a lane with records always
    /// has a summary. Callers hold the lane's lock.
    async fn write_summary(&self, group: &str, partition: Partition, lane: Lane, at_least: i64) -> crate::Result<()> {
        let key = (group, partition as i32, seq(lane.0));
        let first =
            self.rows::<(i64, i64, Vec<u8>)>(&self.st.peek_held, (group, partition as i32, seq(lane.0), 1)).await?;
        let Some((first, due, _)) = first.into_iter().next() else {
            return self.exec(&self.st.delete_held_lane, key).await;
        };
        let summary = self.rows::<(i64, i64, i64)>(&self.st.get_held_lane, key).await?;
        let mut last = summary.first().map_or(first, |(_, last, _)| *last).max(at_least).max(first);
        let beyond =
            self.paged::<(i64,)>(&self.st.held_seqs_after, (group, partition as i32, seq(lane.0), last)).await?;
        last = beyond.into_iter().map(|(s,)| s).fold(last, i64::max);
        self.exec(&self.st.put_held_lane, (group, partition as i32, seq(lane.0), last - first + 1, last, due)).await
    }

    async fn hold_records(
        &self,
        group: &str,
        partition: Partition,
        lane: Lane,
        records: Vec<HeldRecord>,
    ) -> crate::Result<()> {
        let Some(high) = records.iter().map(|r| r.seq).max() else {
            return Ok(());
        };
        let _lane = self.held_lock(group, partition, lane).lock().await;
        let p = partition as i32;
        let mut rows = super::log::Partitions::new();
        for r in records {
            let stored: Stored = (r.key, r.headers, r.value);
            rows.add((), (group.to_string(), p, seq(lane.0), seq(r.seq), seq(r.due_ms), body(&stored)?));
        }
        rows.write(self, &self.st.put_held, 1).await?;
        self.write_summary(group, partition, lane, seq(high)).await
    }

    async fn release_records(&self, group: &str, partition: Partition, lane: Lane, through: u64) -> crate::Result<()> {
        let _lane = self.held_lock(group, partition, lane).lock().await;
        self.exec(&self.st.release_held, (group, partition as i32, seq(lane.0), seq(through))).await?;
        self.write_summary(group, partition, lane, i64::MIN).await
    }
}

#[async_trait]
impl HeldRecords for ScyllaStore {
    async fn hold(
        &self,
        group: &str,
        partition: Partition,
        lane: Lane,
        records: Vec<HeldRecord>,
    ) -> pipeline::Result<()> {
        self.hold_records(group, partition, lane, records).await.map_err(fail)
    }

    async fn update(&self, group: &str, partition: Partition, lane: Lane, record: HeldRecord) -> pipeline::Result<()> {
        // Same seq: a replacement, counted once.
        self.hold_records(group, partition, lane, vec![record]).await.map_err(fail)
    }

    async fn peek(
        &self,
        group: &str,
        partition: Partition,
        lane: Lane,
        limit: usize,
    ) -> pipeline::Result<Vec<HeldRecord>> {
        let want = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let rows = self
            .rows::<(i64, i64, Vec<u8>)>(&self.st.peek_held, (group, partition as i32, seq(lane.0), want))
            .await
            .map_err(fail)?;
        rows.into_iter()
            .map(|(s, due, b)| {
                let (key, headers, value): Stored = from_body(&b).map_err(fail)?;
                Ok(HeldRecord { seq: s as u64, due_ms: due as u64, key, headers, value })
            })
            .collect()
    }

    async fn release(&self, group: &str, partition: Partition, lane: Lane, through: u64) -> pipeline::Result<()> {
        self.release_records(group, partition, lane, through).await.map_err(fail)
    }

    async fn lanes(&self, group: &str, partition: Partition) -> pipeline::Result<Vec<HeldLane>> {
        let rows =
            self.paged::<(i64, i64, i64, i64)>(&self.st.held_lanes, (group, partition as i32)).await.map_err(fail)?;
        Ok(rows
            .into_iter()
            .map(|(lane, count, last_seq, first_due)| HeldLane {
                lane: Lane(lane as u64),
                count: count as u64,
                last_seq: last_seq as u64,
                first_due_ms: first_due as u64,
            })
            .collect())
    }
}
