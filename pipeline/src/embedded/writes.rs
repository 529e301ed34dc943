//! What the embedded deployment writes, counted process-wide: rows (keys put or removed in fjall
//! write batches, by the topics and by the store) and records appended to topic segments, with
//! their logical bytes (keys, values, frames). `herald bench` divides them by the messages of a
//! run to print writes and bytes per message, the cost issue 12 sets out to cut.
//!
//! It is not: the bytes that reach the disk. Write amplification (journal, flushes,
//! compaction) shows in the OS's own count, which the bench reads from `/proc/self/io`.

use fjall::{Keyspace, OwnedWriteBatch, UserKey, UserValue};
use std::sync::atomic::{AtomicU64, Ordering};

/// Rows and bytes counters.
#[derive(Default)]
pub(crate) struct Counters {
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Self { rows: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }

    fn add(&self, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn tally(&self) -> WriteTally {
        WriteTally { rows: self.rows.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }
}

static PROCESS: Counters = Counters::new();

/// Rows and logical bytes written by this process so far (committed batches and appends).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteTally {
    pub rows: u64,
    pub bytes: u64,
}

/// What this process has written so far.
pub fn tally() -> WriteTally {
    PROCESS.tally()
}

/// Counts rows appended outside a batch (topic segment records).
pub(crate) fn add(rows: u64, bytes: u64) {
    PROCESS.add(rows, bytes);
}

/// A fjall write batch that counts its rows and bytes into the tally when it commits.
pub struct Batch {
    inner: OwnedWriteBatch,
    rows: u64,
    bytes: u64,
    counters: &'static Counters,
}

impl Batch {
    pub fn new(inner: OwnedWriteBatch) -> Self {
        Self { inner, rows: 0, bytes: 0, counters: &PROCESS }
    }

    pub fn insert<K: Into<UserKey>, V: Into<UserValue>>(&mut self, keyspace: &Keyspace, key: K, value: V) {
        let (key, value) = (key.into(), value.into());
        self.rows += 1;
        self.bytes += (key.len() + value.len()) as u64;
        self.inner.insert(keyspace, key, value);
    }

    /// Removes `key`. The key is copied: one read from a table (a scan) is a view into that
    /// table's whole block, and held by the memtable it would keep the block — values and
    /// all — in memory until the next flush (measured: ~80 MiB at the 1M bench's peak, from
    /// the throttle releasing held records).
    pub fn remove<K: Into<UserKey>>(&mut self, keyspace: &Keyspace, key: K) {
        let key = UserKey::from(&*key.into());
        self.rows += 1;
        self.bytes += key.len() as u64;
        self.inner.remove(keyspace, key);
    }

    pub fn commit(self) -> fjall::Result<()> {
        self.inner.commit()?;
        self.counters.add(self.rows, self.bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_batch_is_counted_and_a_dropped_one_is_not() {
        static COUNTERS: Counters = Counters::new();
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("k", fjall::KeyspaceCreateOptions::default).unwrap();
        let batch = |db: &fjall::Database| {
            let mut b = Batch { counters: &COUNTERS, ..Batch::new(db.batch()) };
            b.insert(&ks, b"ab".to_vec(), b"cde".to_vec());
            b.remove(&ks, b"xy".to_vec());
            b
        };
        drop(batch(&db));
        assert_eq!(COUNTERS.tally(), WriteTally::default());
        batch(&db).commit().unwrap();
        assert_eq!(COUNTERS.tally(), WriteTally { rows: 2, bytes: 7 });
    }
}
