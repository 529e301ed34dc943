//! The runners' held store ([`pipeline::HeldRecords`]) on ScyllaDB, for the distributed
//! deployment: a worker that takes over a partition finds the lanes its predecessor set aside.
//!
//! Records live in one partition per `(group, partition, lane)`, clustered by seq; a summary
//! row per lane (count, last seq, first due time) is kept by read-modify-write, which is safe
//! because one worker at a time owns a `(group, partition)` (its lease) and so is the only
//! writer. After a crash between the records and the summary, the next write recounts what
//! it touches, so a summary is never ahead of the records for long; `peek` reads records, not
//! the summary, so nothing held is ever skipped.

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

struct Summary {
    count: i64,
    last_seq: i64,
}

impl ScyllaStore {
    async fn summary(&self, group: &str, partition: Partition, lane: Lane) -> crate::Result<Option<Summary>> {
        let rows = self.rows::<(i64, i64, i64)>(&self.st.get_held_lane, (group, partition as i32, seq(lane.0))).await?;
        Ok(rows.first().map(|(count, last_seq, _)| Summary { count: *count, last_seq: *last_seq }))
    }

    /// Writes the lane's summary from `count` and `last_seq`, its first due time read from
    /// the records; an empty lane loses its summary.
    async fn write_summary(
        &self,
        group: &str,
        partition: Partition,
        lane: Lane,
        count: i64,
        last_seq: i64,
    ) -> crate::Result<()> {
        let key = (group, partition as i32, seq(lane.0));
        let first =
            self.rows::<(i64, i64, Vec<u8>)>(&self.st.peek_held, (group, partition as i32, seq(lane.0), 1)).await?;
        match first.first() {
            Some((_, due, _)) if count > 0 => {
                self.exec(&self.st.put_held_lane, (group, partition as i32, seq(lane.0), count, last_seq, *due)).await
            }
            _ => self.exec(&self.st.delete_held_lane, key).await,
        }
    }

    async fn hold_records(
        &self,
        group: &str,
        partition: Partition,
        lane: Lane,
        records: Vec<HeldRecord>,
    ) -> crate::Result<()> {
        let (Some(low), Some(high)) = (records.iter().map(|r| r.seq).min(), records.iter().map(|r| r.seq).max()) else {
            return Ok(());
        };
        let p = partition as i32;
        // Seqs already held among these (holding one again replaces it and counts once).
        let existing =
            self.rows::<(i64,)>(&self.st.held_seqs_between, (group, p, seq(lane.0), seq(low), seq(high))).await?;
        let fresh = records.iter().filter(|r| !existing.iter().any(|(s,)| *s == seq(r.seq))).count() as i64;
        let mut rows = super::log::Partitions::new();
        for r in records {
            let stored: Stored = (r.key, r.headers, r.value);
            rows.add((), (group.to_string(), p, seq(lane.0), seq(r.seq), seq(r.due_ms), body(&stored)?));
        }
        rows.write(self, &self.st.put_held, 1).await?;
        let before = self.summary(group, partition, lane).await?.unwrap_or(Summary { count: 0, last_seq: 0 });
        self.write_summary(group, partition, lane, before.count + fresh, before.last_seq.max(seq(high))).await
    }

    async fn release_records(&self, group: &str, partition: Partition, lane: Lane, through: u64) -> crate::Result<()> {
        let p = partition as i32;
        let gone =
            self.paged::<(i64,)>(&self.st.held_seqs_through, (group, p, seq(lane.0), seq(through))).await?.len() as i64;
        self.exec(&self.st.release_held, (group, p, seq(lane.0), seq(through))).await?;
        let before = self.summary(group, partition, lane).await?.unwrap_or(Summary { count: 0, last_seq: 0 });
        self.write_summary(group, partition, lane, (before.count - gone).max(0), before.last_seq).await
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
