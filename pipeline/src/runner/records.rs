//! A partition's records in memory: lanes, their queues and the loop's bookkeeping, and how a
//! record is written to the held store or the dead-record topic. The consumer loop that moves
//! them is in [`super::partition`].

use crate::held::HeldRecord;
use crate::stage::{Lane, DUE_HEADER};
use crate::topic::{Offset, ProducerRecord};
use crate::topics;
use schemas::envelope::Headers;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

/// The header counting failed attempts of a held record.
pub(super) const ATTEMPTS_HEADER: &str = "herald-attempts";
/// The header marking a held record to be processed on its own.
pub(super) const ALONE_HEADER: &str = "herald-alone";
/// Held seqs start here, so a lane can grow at both ends.
const SEQ_ORIGIN: u64 = 1 << 62;

/// A record of a lane, in memory.
pub(super) struct Pending<T> {
    /// Its topic offset, while it is not done (None: a copy of a held record).
    pub(super) offset: Option<Offset>,
    /// Its seq in the held store (for copies of held records).
    pub(super) seq: Option<u64>,
    pub(super) key: u64,
    pub(super) headers: Headers,
    /// The encoded value (original bytes, or a replacement's encoding).
    pub(super) raw: Vec<u8>,
    /// The decoded value, when still at hand (a step consumes it; it is decoded again from
    /// `raw` if the record comes back).
    pub(super) value: Option<T>,
    pub(super) due_ms: u64,
    pub(super) attempts: u32,
    /// Processed on its own (its batch failed permanently: find which record is at fault).
    pub(super) alone: bool,
    /// When it was first seen (a lane waiting with an old head sets it aside).
    pub(super) since: Instant,
}

pub(super) struct LaneState<T> {
    pub(super) queue: VecDeque<Pending<T>>,
    /// A future of this lane is running (a step or a store call).
    pub(super) busy: bool,
    /// Records in the held store (copies in `queue` included).
    pub(super) held: u64,
    /// Appends to the held store not yet durable.
    pub(super) appending: u64,
    /// Records are being set aside (prepended); records fetched meanwhile go behind them.
    pub(super) prepending: bool,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// When the first held record not in `queue` is due.
    pub(super) held_due: u64,
}

impl<T> LaneState<T> {
    pub(super) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            busy: false,
            held: 0,
            appending: 0,
            prepending: false,
            first_seq: SEQ_ORIGIN,
            last_seq: SEQ_ORIGIN - 1,
            held_due: 0,
        }
    }

    /// When this lane has something to do (None: nothing), with its head's offset to order
    /// lanes ready at the same time (oldest record first, so lanes take turns in the order
    /// their records arrived; held records come after fetched ones of the same time).
    pub(super) fn next_due(&self) -> Option<(u64, u64)> {
        if self.busy {
            return None;
        }
        match self.queue.front() {
            Some(p) => Some((p.due_ms, p.offset.unwrap_or(Offset::MAX))),
            None if self.held > 0 => Some((self.held_due, Offset::MAX)),
            None => None,
        }
    }
}

/// The loop's bookkeeping.
pub(super) struct Loop<T> {
    pub(super) lanes: HashMap<Lane, LaneState<T>>,
    /// Fetched offsets not done yet.
    pub(super) unfinished: BTreeSet<Offset>,
    pub(super) next_fetch: Offset,
    pub(super) committed: Offset,
    /// Records in running steps.
    pub(super) stepping: usize,
    /// The partition was lost to another worker mid-step (`RetryHint::Abandon`).
    pub(super) abandoned: bool,
    /// Lanes in their first steps, and the records taken ahead for them.
    pub(super) express: super::ahead::Express,
}

impl<T> Loop<T> {
    /// Records in memory: lane queues and running steps.
    pub(super) fn in_memory(&self) -> usize {
        self.stepping + self.lanes.values().map(|l| l.queue.len()).sum::<usize>()
    }

    /// The earliest time an idle lane has something to do.
    pub(super) fn next_wake(&self) -> Option<u64> {
        self.lanes.values().filter_map(|l| l.next_due().map(|(due, _)| due)).min()
    }
}

pub(super) fn due_of(headers: &Headers) -> u64 {
    headers.get(DUE_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub(super) fn attempts_of(headers: &Headers) -> u32 {
    headers.get(ATTEMPTS_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub(super) fn held_record<T>(p: &Pending<T>, due_ms: u64) -> HeldRecord {
    let mut headers = p.headers.clone();
    if p.attempts > 0 {
        headers.set(ATTEMPTS_HEADER, p.attempts.to_string());
    }
    if p.alone {
        headers.set(ALONE_HEADER, "1");
    }
    HeldRecord { seq: p.seq.unwrap_or(0), due_ms, key: p.key, headers, value: p.raw.clone() }
}

pub(super) fn dead_record(topic: &str, key: u64, value: Vec<u8>, mut headers: Headers, error: &str) -> ProducerRecord {
    headers.set("herald-source-topic", topic);
    headers.set("herald-error", error);
    ProducerRecord { topic: topics::DEAD_RECORDS.name(), partition: 0, key, headers, value }
}
