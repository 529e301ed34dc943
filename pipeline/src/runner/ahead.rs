//! Express lanes: a lane's first steps in a partition (a new campaign, tenant or route) do not
//! queue behind the big lanes that keep a saturated pipeline full.
//!
//! Three things make a new lane's first records go first, each bounded:
//! - **Read-ahead.** While the partition's memory is full, the loop scans the records past its
//!   fetch position as they arrive (at most [`SCAN`] every [`SCAN_EVERY`]; each record's lane
//!   read once, from its first fields where the stage can: `Stage::lane_of_encoded`) and takes
//!   the records of express lanes out of order, up to a second `partition_records`. A taken offset is skipped when the
//!   fetch reaches it. Commits never pass the fetch position, so a crash replays taken records
//!   like any unfinished record (stages are idempotent under replay). Only backends that read
//!   anywhere at no extra cost do this (`TopicBackend::reads_anywhere`: the embedded segments).
//! - **Express reserve** in bounded topics (`crate::room`): its steps may produce into a
//!   second capacity that steady traffic never enters.
//! - **Reserved slots:** its steps may start past `concurrent_lanes`, up to [`SLOTS`] more.
//!
//! Order within a lane is kept: a scan takes every express record it meets, in offset order,
//! and stops at the first one it cannot take; a lane stops being express after [`STEPS`]
//! steps and never becomes express again (unless the bounded step counts are reset, which
//! resets the scan too).
//!
//! It is not: a priority a tenant can ask for. Every lane is express for its first steps only.

use super::partition::{Consumer, LaneFuture};
use super::records::Loop;
use crate::stage::{Lane, Stage};
use crate::topic::{ConsumerRecord, Offset};
use futures::stream::FuturesUnordered;
use schemas::codec;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Steps a lane is express for.
pub(super) const STEPS: u32 = 8;
/// Steps of express lanes that may run past `concurrent_lanes`.
pub(super) const SLOTS: usize = 4;
/// Records one scan reads at most.
const SCAN: usize = 256;
/// How often a full partition scans ahead at most.
const SCAN_EVERY: Duration = Duration::from_millis(5);
/// Lanes whose steps are counted; past it the counts restart (every lane new once more).
const SEEN_LIMIT: usize = 65_536;
/// Offsets taken ahead and not yet passed by the fetch; no scan past it (a lane stuck at the
/// fetch position for long is set aside in the held store, which moves the fetch on).
const TAKEN_MAX: usize = 4_096;

/// A partition loop's express state.
pub(super) struct Express {
    /// Steps started per lane.
    steps: HashMap<Lane, u32>,
    /// Offsets taken ahead of the fetch position; skipped when the fetch reaches them.
    pub(super) taken: BTreeSet<Offset>,
    /// Records below this offset (and at or past the fetch position) were scanned.
    scanned: Offset,
    last_scan: Option<Instant>,
}

impl Express {
    pub(super) fn new() -> Self {
        Self { steps: HashMap::new(), taken: BTreeSet::new(), scanned: 0, last_scan: None }
    }

    /// Whether `lane` is still in its first steps.
    pub(super) fn is_express(&self, lane: Lane) -> bool {
        self.steps.get(&lane).is_none_or(|s| *s < STEPS)
    }

    /// Counts a step of `lane` started.
    pub(super) fn stepped(&mut self, lane: Lane) {
        if self.steps.len() >= SEEN_LIMIT && !self.steps.contains_key(&lane) {
            self.steps.clear();
            // Lanes scanned past as not express may be express again: scan them again.
            self.scanned = 0;
        }
        *self.steps.entry(lane).or_insert(0) += 1;
    }
}

impl<S: Stage> Consumer<S> {
    /// Records the express reserve of memory (a second `partition_records`) still has room for.
    fn reserve_left(&self, state: &Loop<S::In>) -> usize {
        (2 * self.config.partition_records).saturating_sub(state.in_memory())
    }

    /// Where to scan ahead from, and not before when, if the partition should: its memory is
    /// full, the express reserve is not, and the backend reads anywhere.
    pub(super) fn ahead_from(&self, state: &Loop<S::In>) -> Option<(Offset, Instant)> {
        if self.reserve_left(state) == 0 || state.express.taken.len() >= TAKEN_MAX || !self.backend.reads_anywhere() {
            return None;
        }
        let not_before = state.express.last_scan.map_or_else(Instant::now, |at| at + SCAN_EVERY);
        Some((state.express.scanned.max(state.next_fetch), not_before))
    }

    /// Records past the fetch position from `from` on (waits for new ones up to `fetch_wait`).
    pub(super) async fn scan_ahead(&self, from: Option<(Offset, Instant)>) -> Option<Vec<ConsumerRecord>> {
        let (from, not_before) = from?;
        tokio::time::sleep_until(not_before.into()).await;
        self.backend.fetch(self.topic, self.partition, from, SCAN, self.config.fetch_wait).await.ok()
    }

    /// Takes the express lanes' records of a scan, in order, within the express reserve.
    pub(super) fn take_ahead(
        self: &Arc<Self>,
        state: &mut Loop<S::In>,
        records: Vec<ConsumerRecord>,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) {
        state.express.last_scan = Some(Instant::now());
        let budget = self.reserve_left(state);
        let mut take = Vec::new();
        let mut scanned = state.express.scanned.max(state.next_fetch);
        for r in records {
            let offset = r.offset;
            if offset < scanned {
                continue;
            }
            // Undecodable records are not express: the fetch dead-letters them in order.
            let lane = self
                .stage
                .lane_of_encoded(&r.value)
                .or_else(|| codec::decode::<S::In>(&r.value).ok().map(|v| self.stage.lane(&v)));
            if lane.is_some_and(|l| state.express.is_express(l)) {
                if take.len() >= budget {
                    break;
                }
                take.push(r);
            }
            scanned = offset + 1;
        }
        state.express.scanned = scanned;
        if !take.is_empty() {
            self.on_fetched(state, take, true, running);
        }
    }
}
