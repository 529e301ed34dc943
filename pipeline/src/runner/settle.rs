//! What the partition loop does with a finished step: done records leave (their offsets count
//! as done, held copies are released), the rest waits — at the lane's head in memory for a
//! short wait, written back to (or set aside in) the held store for a long one — and a failed
//! step is retried, split up, or dead-lettered.

use super::partition::{Consumer, Event, LaneFuture};
use super::records::{dead_record, held_record, LaneState, Loop, Pending};
use super::{now_ms, persist};
use crate::held::HeldRecord;
use crate::stage::{Lane, RetryHint, Stage, StageError, Step};
use crate::topic::{Offset, ProducerRecord};
use futures::stream::FuturesUnordered;
use schemas::codec;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

type StepResult<T> = std::result::Result<Step<T>, StageError>;

/// A step's records sorted: done, still to do, and when the rest is due.
struct Sorted<T> {
    done: Vec<Pending<T>>,
    rest: Vec<Pending<T>>,
    until: u64,
}

impl<S: Stage> Consumer<S> {
    pub(super) fn on_stepped(
        self: &Arc<Self>,
        state: &mut Loop<S::In>,
        lane: Lane,
        records: Vec<Pending<S::In>>,
        result: StepResult<S::In>,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) {
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        let Some(Sorted { done, mut rest, until }) = self.sort(state, lane, records, result, running) else { return };
        let now = now_ms();
        // Done: memory records are finished; held copies are released from the store.
        let mut release_through = None;
        for p in done {
            match (p.offset, p.seq) {
                (Some(o), _) => {
                    state.unfinished.remove(&o);
                }
                (None, Some(seq)) => release_through = Some(seq),
                (None, None) => {}
            }
        }
        let l = state.lanes.entry(lane).or_insert_with(LaneState::new);
        // The head waits; the records behind it wait for the head (the lane keeps its order).
        if let Some(head) = rest.first_mut() {
            head.due_ms = head.due_ms.max(until);
        }
        let holds_copies =
            rest.first().is_some_and(|p| p.seq.is_some()) || (rest.is_empty() && l.held > 0 && l.queue.is_empty());
        let oldest = rest.iter().map(|p| p.since).min();
        let wait_long = until.saturating_sub(now) > self.config.hold_after.as_millis() as u64
            || oldest.is_some_and(|s| s.elapsed() > self.config.hold_after);
        if holds_copies || release_through.is_some() {
            self.settle_held(l, lane, rest, release_through, wait_long.then_some(until), running);
        } else if rest.is_empty() {
            l.busy = false;
        } else if !wait_long {
            // A short wait: keep the records at the lane's head, in memory.
            for p in rest.into_iter().rev() {
                l.queue.push_front(p);
            }
            l.busy = false;
        } else {
            self.spill(l, lane, rest, until, running);
        }
    }

    /// Sorts a step's records by its result; `None` when they were dead-lettered.
    fn sort(
        self: &Arc<Self>,
        state: &mut Loop<S::In>,
        lane: Lane,
        mut records: Vec<Pending<S::In>>,
        result: StepResult<S::In>,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) -> Option<Sorted<S::In>> {
        let now = now_ms();
        let e = match result {
            Ok(Step::Done) => return Some(Sorted { done: records, rest: Vec::new(), until: now }),
            Ok(Step::Wait { from, replacement, until_ms }) => {
                let mut rest = records.split_off(from.min(records.len()));
                if let (Some(first), Some(value)) = (rest.first_mut(), replacement) {
                    if let Ok(raw) = codec::encode(&value) {
                        first.raw = raw;
                        first.value = Some(value);
                    }
                }
                return Some(Sorted { done: records, rest, until: until_ms });
            }
            Err(e) => e,
        };
        self.metrics.failures.fetch_add(1, Ordering::Relaxed);
        let attempts = records.first().map(|p| p.attempts + 1).unwrap_or(1);
        match e.hint {
            RetryHint::Abandon if self.lease.is_some() => {
                tracing::warn!(stage = self.group, partition = self.partition, error = %e, "partition lost to another worker; stopping it");
                state.abandoned = true;
                self.shutdown.trigger();
                Some(Sorted { done: Vec::new(), rest: records, until: now })
            }
            RetryHint::Outage(delay) => {
                tracing::warn!(stage = self.group, partition = self.partition, attempts, error = %e, "backend unavailable; the lane waits and retries");
                for p in records.iter_mut() {
                    p.attempts = attempts;
                }
                let wait = (delay * attempts.min(25)).min(Duration::from_secs(5));
                Some(Sorted { done: Vec::new(), rest: records, until: now + wait.as_millis() as u64 })
            }
            RetryHint::RetryAfter(delay) if attempts < self.config.max_attempts => {
                tracing::warn!(stage = self.group, partition = self.partition, attempts, error = %e, "batch failed; retrying");
                for p in records.iter_mut() {
                    p.attempts = attempts;
                }
                Some(Sorted { done: Vec::new(), rest: records, until: now + (delay * attempts).as_millis() as u64 })
            }
            _ if records.len() > 1 => {
                // Which record is at fault? Each goes again on its own.
                for p in records.iter_mut() {
                    p.alone = true;
                    p.attempts = 0;
                }
                Some(Sorted { done: Vec::new(), rest: records, until: now })
            }
            _ => {
                tracing::error!(stage = self.group, partition = self.partition, attempts, error = %e, "batch dead-lettered");
                self.dead_letter(state, lane, records, &e.message, running);
                None
            }
        }
    }

    /// A lane in held mode: releases what is done. A head that waits briefly stays in memory, in
    /// front of the other copies (the store keeps its earlier version: a replay after a crash
    /// processes that again, which a stage must accept anyway). One that waits long
    /// (`long_until`) is written back, and every copy leaves memory, to be loaded again in order
    /// when it is due (a copy behind it must never run first and release it).
    pub(super) fn settle_held(
        self: &Arc<Self>,
        l: &mut LaneState<S::In>,
        lane: Lane,
        mut rest: Vec<Pending<S::In>>,
        release_through: Option<u64>,
        long_until: Option<u64>,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) {
        let head = long_until.and_then(|until| rest.first().map(|p| held_record(p, until)));
        let released = release_through.map(|t| t + 1 - l.first_seq).unwrap_or(0);
        if let Some(t) = release_through {
            l.first_seq = t + 1;
        }
        if head.is_some() {
            rest.retain(|p| p.seq.is_none());
            l.queue.retain(|p| p.seq.is_none());
        }
        for p in rest.into_iter().rev() {
            l.queue.push_front(p);
        }
        if release_through.is_none() && head.is_none() {
            l.busy = false;
            return;
        }
        l.busy = true;
        let this = self.clone();
        running.push(Box::pin(async move {
            if let Some(t) = release_through {
                tracing::debug!(
                    stage = this.group,
                    partition = this.partition,
                    lane = lane.0,
                    through = t,
                    "releasing held records"
                );
                let _ = persist("releasing held records", this.partition, &this.health, &this.shutdown, || {
                    this.held.release(this.group, this.partition, lane, t)
                })
                .await;
            }
            let due = match head {
                Some(h) => {
                    let due = h.due_ms;
                    let _ = persist("updating a held record", this.partition, &this.health, &this.shutdown, || {
                        this.held.update(this.group, this.partition, lane, h.clone())
                    })
                    .await;
                    due
                }
                // Released: the next held record's due time is found when it is loaded.
                None => now_ms(),
            };
            Event::Settled { lane, released, due_ms: Some(due) }
        }));
    }

    /// A long wait in memory mode (or memory pressure): sets the lane's in-memory records aside
    /// (the waiting ones, then the rest of its queue), in front of anything it already holds.
    pub(super) fn spill(
        self: &Arc<Self>,
        l: &mut LaneState<S::In>,
        lane: Lane,
        rest: Vec<Pending<S::In>>,
        until: u64,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) {
        let mut spill: Vec<Pending<S::In>> = rest;
        spill.extend(l.queue.drain(..));
        l.prepending = true;
        let count = spill.len() as u64;
        let first = l.first_seq - count;
        l.first_seq = first;
        if l.held == 0 {
            l.last_seq = first + count - 1;
        }
        let due_ms = spill.first().map(|p| p.due_ms).unwrap_or(until);
        let offsets: Vec<Offset> = spill.iter().filter_map(|p| p.offset).collect();
        let held: Vec<HeldRecord> = spill
            .iter()
            .enumerate()
            .map(|(i, p)| HeldRecord { seq: first + i as u64, ..held_record(p, p.due_ms) })
            .collect();
        self.metrics.held_records.fetch_add(count, Ordering::Relaxed);
        l.busy = true;
        let this = self.clone();
        running.push(Box::pin(async move {
            let _ = persist("holding records", this.partition, &this.health, &this.shutdown, || {
                this.held.hold(this.group, this.partition, lane, held.clone())
            })
            .await;
            Event::Prepended { lane, offsets, count, due_ms }
        }));
    }

    pub(super) fn dead_letter(
        self: &Arc<Self>,
        state: &mut Loop<S::In>,
        lane: Lane,
        records: Vec<Pending<S::In>>,
        reason: &str,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) {
        self.metrics.dead_records.fetch_add(records.len() as u64, Ordering::Relaxed);
        let offsets: Vec<Offset> = records.iter().filter_map(|p| p.offset).collect();
        let release = records.iter().filter_map(|p| p.seq).max();
        let released = records.iter().filter(|p| p.seq.is_some()).count() as u64;
        let dead: Vec<ProducerRecord> =
            records.into_iter().map(|p| dead_record(self.topic, p.key, p.raw, p.headers, reason)).collect();
        if let (Some(t), Some(l)) = (release, state.lanes.get_mut(&lane)) {
            l.first_seq = t + 1;
        }
        if let Some(l) = state.lanes.get_mut(&lane) {
            l.busy = true;
        }
        let this = self.clone();
        running.push(Box::pin(async move {
            let _ = persist("dead-lettering", this.partition, &this.health, &this.shutdown, || {
                this.backend.produce(dead.clone())
            })
            .await;
            if let Some(t) = release {
                let _ = persist("releasing held records", this.partition, &this.health, &this.shutdown, || {
                    this.held.release(this.group, this.partition, lane, t)
                })
                .await;
            }
            Event::Dead { lane, offsets, released }
        }));
    }
}
