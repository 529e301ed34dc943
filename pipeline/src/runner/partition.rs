//! One partition's consumer loop (see the runner module docs).
//!
//! A lane's records are its in-memory `queue` (oldest first) followed by `held` records in the
//! held store. The queue holds either records fetched from the topic (their offsets are not done
//! yet) or, once the lane has held records, copies of its first held records loaded for
//! processing. New records of a lane with held records are appended to the store, so the order
//! of a lane never changes. Every store call of a lane runs inside that lane's one future, so
//! they never race; appends of newly fetched records only ever touch seqs above the lane's last.

use super::records::{attempts_of, dead_record, due_of, LaneState, Loop, Pending, ALONE_HEADER};
use super::{now_ms, persist, RunnerConfig, StageHealth, StageMetrics};
use crate::held::{HeldLane, HeldRecord, HeldRecords};
use crate::stage::{Emitter, Input, Lane, Stage, StageError, Step};
use crate::topic::{ConsumerRecord, Offset, Partition, TopicBackend};
use crate::Shutdown;
use futures::stream::{FuturesUnordered, StreamExt};
use schemas::codec;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub(super) struct Consumer<S: Stage> {
    pub stage: Arc<S>,
    pub topic: &'static str,
    pub group: &'static str,
    pub partition: Partition,
    pub backend: Arc<dyn TopicBackend>,
    pub held: Arc<dyn HeldRecords>,
    pub room: Arc<crate::room::Room>,
    pub config: RunnerConfig,
    pub shutdown: Shutdown,
    pub metrics: Arc<StageMetrics>,
    pub health: Arc<StageHealth>,
    /// The lease this partition is held by (distributed workers).
    pub lease: Option<Arc<crate::stage::PartitionLease>>,
}

/// What a lane future reports back to the loop.
pub(super) enum Event<T> {
    /// A step ran over `records` (memory records, or loaded copies).
    Stepped { lane: Lane, records: Vec<Pending<T>>, result: std::result::Result<Step<T>, StageError>, busy_us: u64 },
    /// `offsets` were set aside in the held store (now done); `held` more records held at the
    /// lane's front.
    Prepended { lane: Lane, offsets: Vec<Offset>, count: u64, due_ms: u64 },
    /// Fetched records appended to held lanes (`(lane, count)`); their offsets are done.
    Appended { lanes: Vec<(Lane, u64)>, offsets: Vec<Offset> },
    /// Held records loaded (copies) into a lane's queue.
    Loaded { lane: Lane, records: Vec<Pending<T>> },
    /// Held records released or updated; `released` fewer held, the head now due at `due_ms`.
    Settled { lane: Lane, released: u64, due_ms: Option<u64> },
    /// Records dead-lettered (offsets done, held seqs released).
    Dead { lane: Lane, offsets: Vec<Offset>, released: u64 },
}

pub(super) type LaneFuture<T> = Pin<Box<dyn Future<Output = Event<T>> + Send>>;

impl<S: Stage> Consumer<S> {
    pub async fn run(self) {
        let (partition, group) = (self.partition, self.group);
        let Some(committed) =
            persist("reading the committed offset", partition, &self.health, &self.shutdown, || async {
                match self.backend.committed(self.topic, group, partition).await? {
                    Some(c) => Ok(c),
                    None => self.backend.start_offset(self.topic, partition).await,
                }
            })
            .await
        else {
            return;
        };
        let Some(held_lanes) = persist("reading held lanes", partition, &self.health, &self.shutdown, || {
            self.held.lanes(group, partition)
        })
        .await
        else {
            return;
        };
        if !held_lanes.is_empty() {
            let held: u64 = held_lanes.iter().map(|l| l.count).sum();
            tracing::info!(stage = group, partition, committed, lanes = held_lanes.len(), held, "resuming held lanes");
        }
        self.stage.on_assigned(partition).await;
        let mut state = Loop::<S::In> {
            lanes: HashMap::new(),
            unfinished: BTreeSet::new(),
            next_fetch: committed,
            committed,
            stepping: 0,
            abandoned: false,
            express: super::ahead::Express::new(),
        };
        for HeldLane { lane, count, last_seq, first_due_ms } in held_lanes {
            let l = state.lanes.entry(lane).or_insert_with(LaneState::new);
            l.held = count;
            l.last_seq = last_seq;
            l.first_seq = last_seq + 1 - count;
            l.held_due = first_due_ms;
        }
        let mut running: FuturesUnordered<LaneFuture<S::In>> = FuturesUnordered::new();
        let this = Arc::new(self);
        // Set when shutdown is first seen: running steps get the drain grace, then are dropped
        // (their records stay unfinished and are redone after restart).
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let shutting_down = this.shutdown.is_triggered();
            if shutting_down && drain_deadline.is_none() {
                drain_deadline = Some(tokio::time::Instant::now() + crate::shutdown::DRAIN_GRACE);
            }
            if !shutting_down {
                this.start_work(&mut state, &mut running);
            }
            if shutting_down && running.is_empty() {
                break;
            }
            let mut room = this.config.partition_records.saturating_sub(state.in_memory());
            if room == 0 && !shutting_down && this.relieve(&mut state, &mut running) {
                room = this.config.partition_records.saturating_sub(state.in_memory());
            }
            let ahead = if room == 0 && !shutting_down { this.ahead_from(&state) } else { None };
            let can_fetch = !shutting_down && room > 0;
            let wake = state.next_wake();
            // Nothing running: the fetch may wait, up to the next lane's due time.
            let fetch_wait = match (running.is_empty(), wake) {
                (true, None) => this.config.fetch_wait,
                (true, Some(at)) => Duration::from_millis(at.saturating_sub(now_ms())).min(this.config.fetch_wait),
                (false, _) => Duration::ZERO,
            };
            let deadline = drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3_600));
            tokio::select! {
                biased;
                Some(event) = running.next(), if !running.is_empty() => this.on_event(&mut state, event, &mut running),
                _ = tokio::time::sleep_until(deadline), if shutting_down => {
                    this.metrics.drain_overruns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(partition = this.partition, steps = running.len(), "drain grace over; dropping running steps");
                    break;
                }
                _ = this.shutdown.wait(), if !shutting_down => {}
                records = this.fetch(state.next_fetch, room, fetch_wait), if can_fetch => {
                    if let Some(records) = records {
                        this.on_fetched(&mut state, records, false, &mut running);
                    }
                }
                records = this.scan_ahead(ahead), if ahead.is_some() => {
                    if let Some(records) = records {
                        this.take_ahead(&mut state, records, &mut running);
                    }
                }
                _ = sleep_until_ms(wake), if wake.is_some() && !can_fetch => {}
            }
            this.commit(&mut state).await;
        }
        this.commit(&mut state).await;
        this.stage.on_revoked(partition).await;
    }

    async fn fetch(&self, from: Offset, max: usize, wait: Duration) -> Option<Vec<ConsumerRecord>> {
        // A short poll when there is other work; the loop comes back immediately.
        let wait = if wait.is_zero() { Duration::from_millis(1) } else { wait };
        match self.backend.fetch(self.topic, self.partition, from, max, wait).await {
            Ok(r) => {
                self.health.recover(self.partition);
                Some(r)
            }
            Err(e) => {
                self.health.fail(self.partition, &e);
                tracing::warn!(stage = self.group, partition = self.partition, error = %e, "fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }

    /// Takes fetched records in: at the fetch position, or (`ahead`) taken out of order for
    /// express lanes (`super::ahead`), which the fetch skips when it reaches them.
    pub(super) fn on_fetched(
        self: &Arc<Self>,
        state: &mut Loop<S::In>,
        records: Vec<ConsumerRecord>,
        ahead: bool,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) {
        let mut dead = Vec::new();
        let mut appends: HashMap<Lane, Vec<HeldRecord>> = HashMap::new();
        let mut appended_offsets = Vec::new();
        let fetched_ms = now_ms();
        for r in records {
            if r.offset < state.next_fetch {
                continue;
            }
            if ahead {
                state.express.taken.insert(r.offset);
            } else {
                state.next_fetch = r.offset + 1;
                if state.express.taken.remove(&r.offset) {
                    continue;
                }
            }
            self.metrics.records_in.fetch_add(1, Ordering::Relaxed);
            let value = match codec::decode::<S::In>(&r.value) {
                Ok(v) => v,
                Err(e) => {
                    dead.push(dead_record(self.topic, r.key, r.value, r.headers, &format!("undecodable: {e}")));
                    state.unfinished.insert(r.offset);
                    appended_offsets.push(r.offset);
                    continue;
                }
            };
            let lane = self.stage.lane(&value);
            let due_ms = due_of(&r.headers);
            // A record is ready from its due time or its arrival, whichever is later: lanes
            // are then served in the order their work became ready.
            let ready_ms = due_ms.max(fetched_ms);
            let l = state.lanes.entry(lane).or_insert_with(LaneState::new);
            state.unfinished.insert(r.offset);
            // A lane with held records continues in the held store (its order); a record due
            // long from now goes straight there; everything else waits in memory (bounded by
            // `partition_records`: fetching stops there, and waiting lanes are set aside).
            let far = due_ms > now_ms() + self.config.hold_after.as_millis() as u64;
            if l.held > 0 || l.prepending || far {
                l.last_seq += 1;
                if l.held == 0 {
                    l.held_due = due_ms;
                }
                l.held += 1;
                l.appending += 1;
                appends.entry(lane).or_default().push(HeldRecord {
                    seq: l.last_seq,
                    due_ms,
                    key: r.key,
                    headers: r.headers,
                    value: r.value,
                });
                appended_offsets.push(r.offset);
            } else {
                l.queue.push_back(Pending {
                    offset: Some(r.offset),
                    seq: None,
                    key: r.key,
                    headers: r.headers,
                    raw: r.value,
                    value: Some(value),
                    due_ms: ready_ms,
                    attempts: 0,
                    alone: false,
                    since: Instant::now(),
                });
            }
        }
        if appends.is_empty() && dead.is_empty() {
            return;
        }
        let held_count: u64 = appends.values().map(|v| v.len() as u64).sum();
        self.metrics.held_records.fetch_add(held_count, Ordering::Relaxed);
        self.metrics.dead_records.fetch_add(dead.len() as u64, Ordering::Relaxed);
        let this = self.clone();
        running.push(Box::pin(async move {
            let mut lanes = Vec::with_capacity(appends.len());
            for (lane, records) in appends {
                tracing::debug!(
                    stage = this.group,
                    partition = this.partition,
                    lane = lane.0,
                    n = records.len(),
                    "holding records"
                );
                let _ = persist("holding records", this.partition, &this.health, &this.shutdown, || {
                    this.held.hold(this.group, this.partition, lane, records.clone())
                })
                .await;
                lanes.push((lane, records.len() as u64));
            }
            if !dead.is_empty() {
                let _ = persist("dead-lettering", this.partition, &this.health, &this.shutdown, || {
                    this.backend.produce(dead.clone())
                })
                .await;
            }
            Event::Appended { lanes, offsets: appended_offsets }
        }));
    }

    /// The partition's memory is full: sets the waiting lane with the most records in memory
    /// aside in the held store, so records of other lanes can be fetched. Whether it did.
    fn relieve(self: &Arc<Self>, state: &mut Loop<S::In>, running: &mut FuturesUnordered<LaneFuture<S::In>>) -> bool {
        let now = now_ms();
        let waiting = state
            .lanes
            .iter()
            .filter(|(_, l)| !l.busy && l.queue.front().is_some_and(|p| p.due_ms > now))
            .max_by_key(|(_, l)| l.queue.len())
            .map(|(lane, _)| *lane);
        let Some(lane) = waiting else { return false };
        let Some(l) = state.lanes.get_mut(&lane) else { return false };
        let until = l.queue.front().map(|p| p.due_ms).unwrap_or(now);
        if l.queue.front().is_some_and(|p| p.seq.is_some()) {
            // Copies of held records: the store has them; the head's replacement is written
            // back, and they are loaded again when due.
            let rest: Vec<Pending<S::In>> = l.queue.drain(..).collect();
            self.settle_held(l, lane, rest, None, Some(until), running);
        } else {
            self.spill(l, lane, Vec::new(), until, running);
        }
        true
    }

    /// Starts a future for every idle lane with due work, up to the concurrency bound.
    fn start_work(self: &Arc<Self>, state: &mut Loop<S::In>, running: &mut FuturesUnordered<LaneFuture<S::In>>) {
        let now = now_ms();
        let express = &state.express;
        let mut ready: Vec<(bool, (u64, u64), Lane)> = state
            .lanes
            .iter()
            .filter_map(|(lane, l)| {
                l.next_due().filter(|(d, _)| *d <= now).map(|d| (!express.is_express(*lane), d, *lane))
            })
            .collect();
        // Express lanes first (`super::ahead`); then ready earliest first, then oldest record:
        // lanes take turns.
        ready.sort_unstable();
        let lanes = state.lanes.len();
        for (normal, _, lane) in ready {
            let slots =
                if normal { self.config.concurrent_lanes } else { self.config.concurrent_lanes + super::ahead::SLOTS };
            if running.len() >= slots {
                if normal {
                    break;
                }
                continue;
            }
            let Some(l) = state.lanes.get_mut(&lane) else { continue };
            l.busy = true;
            if l.queue.is_empty() {
                running.push(self.load(lane));
                continue;
            }
            let mut batch: Vec<Pending<S::In>> = Vec::new();
            while batch.len() < self.config.max_batch
                && l.queue.front().is_some_and(|p| p.due_ms <= now && (!p.alone || batch.is_empty()))
                && !batch.first().is_some_and(|p| p.alone)
            {
                batch.extend(l.queue.pop_front());
            }
            state.stepping += batch.len();
            state.express.stepped(lane);
            running.push(self.step(lane, batch, lanes, !normal));
        }
    }

    /// Loads the first held records of a lane (copies) if due.
    fn load(self: &Arc<Self>, lane: Lane) -> LaneFuture<S::In> {
        let this = self.clone();
        Box::pin(async move {
            let limit = this.config.lane_queue.max(1);
            let held = persist("reading held records", this.partition, &this.health, &this.shutdown, || {
                this.held.peek(this.group, this.partition, lane, limit)
            })
            .await
            .unwrap_or_default();
            let mut records = Vec::with_capacity(held.len());
            for h in held {
                match codec::decode::<S::In>(&h.value) {
                    Ok(value) => records.push(Pending {
                        offset: None,
                        seq: Some(h.seq),
                        key: h.key,
                        attempts: attempts_of(&h.headers),
                        alone: h.headers.get(ALONE_HEADER).is_some(),
                        headers: h.headers,
                        raw: h.value,
                        value: Some(value),
                        due_ms: h.due_ms,
                        since: Instant::now(),
                    }),
                    Err(e) => {
                        tracing::error!(stage = this.group, error = %e, "undecodable held record dead-lettered");
                        let dead =
                            vec![dead_record(this.topic, h.key, h.value, h.headers, &format!("undecodable: {e}"))];
                        let _ = persist("dead-lettering", this.partition, &this.health, &this.shutdown, || {
                            this.backend.produce(dead.clone())
                        })
                        .await;
                        let _ = persist("releasing", this.partition, &this.health, &this.shutdown, || {
                            this.held.release(this.group, this.partition, lane, h.seq)
                        })
                        .await;
                        return Event::Settled { lane, released: 1, due_ms: Some(now_ms()) };
                    }
                }
            }
            Event::Loaded { lane, records }
        })
    }

    /// Runs the stage over one lane's batch, then produces what it emitted and releases the
    /// held records it finished.
    fn step(
        self: &Arc<Self>,
        lane: Lane,
        mut batch: Vec<Pending<S::In>>,
        lanes: usize,
        express: bool,
    ) -> LaneFuture<S::In> {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let mut inputs: Vec<Input<S::In>> = Vec::with_capacity(batch.len());
            for p in batch.iter_mut() {
                let value = match p.value.take() {
                    Some(v) => v,
                    // Bytes that decoded once (or were encoded from a value) decode again.
                    None => match codec::decode(&p.raw) {
                        Ok(v) => v,
                        Err(e) => {
                            let error = StageError::permanent(format!("undecodable: {e}"));
                            return Event::Stepped { lane, records: batch, result: Err(error), busy_us: 0 };
                        }
                    },
                };
                inputs.push(Input {
                    partition: this.partition,
                    offset: p.offset,
                    headers: p.headers.clone(),
                    value,
                    lanes,
                    lease: this.lease.clone(),
                });
            }
            let mut out = Emitter::with_room(this.backend.clone(), this.room.clone());
            out.set_express(express);
            let headers = batch.first().map(|p| p.headers.clone()).unwrap_or_default();
            let span = crate::trace::step_span(this.stage.name(), this.partition, batch.len(), &headers);
            out.set_headers(crate::trace::context_headers(&span, &headers));
            let result = match this.stage.process(inputs, &mut out).instrument(span).await {
                Ok(step) => match out.flush().await {
                    Ok(_) => Ok(step),
                    Err(e) => Err(StageError::from(e)),
                },
                Err(e) => {
                    out.discard();
                    Err(e)
                }
            };
            this.metrics.records_out.fetch_add(out.emitted(), Ordering::Relaxed);
            let busy_us = started.elapsed().as_micros() as u64;
            Event::Stepped { lane, records: batch, result, busy_us }
        })
    }

    fn on_event(
        self: &Arc<Self>,
        state: &mut Loop<S::In>,
        event: Event<S::In>,
        running: &mut FuturesUnordered<LaneFuture<S::In>>,
    ) {
        match event {
            Event::Appended { lanes, offsets } => {
                for o in offsets {
                    state.unfinished.remove(&o);
                }
                for (lane, n) in lanes {
                    if let Some(l) = state.lanes.get_mut(&lane) {
                        l.appending = l.appending.saturating_sub(n);
                    }
                }
            }
            Event::Loaded { lane, records } => {
                let l = state.lanes.entry(lane).or_insert_with(LaneState::new);
                l.busy = false;
                match records.first() {
                    // Not due yet: remember when, keep nothing in memory.
                    Some(first) if first.due_ms > now_ms() => l.held_due = first.due_ms,
                    Some(_) => l.queue.extend(records),
                    // Appends in flight: look again shortly.
                    None if l.appending > 0 => l.held_due = now_ms() + 1,
                    // The store has nothing more: back to memory mode.
                    None => l.held = 0,
                }
            }
            Event::Settled { lane, released, due_ms } => {
                let l = state.lanes.entry(lane).or_insert_with(LaneState::new);
                l.busy = false;
                l.held = l.held.saturating_sub(released);
                if let Some(d) = due_ms {
                    l.held_due = d;
                }
            }
            Event::Prepended { lane, offsets, count, due_ms } => {
                for o in &offsets {
                    state.unfinished.remove(o);
                }
                let l = state.lanes.entry(lane).or_insert_with(LaneState::new);
                l.busy = false;
                l.prepending = false;
                l.held += count;
                l.held_due = due_ms;
            }
            Event::Dead { lane, offsets, released } => {
                for o in &offsets {
                    state.unfinished.remove(o);
                }
                let l = state.lanes.entry(lane).or_insert_with(LaneState::new);
                l.busy = false;
                l.held = l.held.saturating_sub(released);
                l.held_due = now_ms();
            }
            Event::Stepped { lane, records, result, busy_us } => {
                self.metrics.busy_us.fetch_add(busy_us, Ordering::Relaxed);
                state.stepping = state.stepping.saturating_sub(records.len());
                self.on_stepped(state, lane, records, result, running);
            }
        }
        // Forget idle, empty lanes (memory stays bounded by the active ones).
        state.lanes.retain(|_, l| l.busy || l.held > 0 || l.appending > 0 || !l.queue.is_empty());
    }

    /// Commits the lowest offset not yet done, if it moved.
    async fn commit(&self, state: &mut Loop<S::In>) {
        // Records taken ahead are past the fetch position: never commit past it.
        let low = state.unfinished.first().map_or(state.next_fetch, |u| (*u).min(state.next_fetch));
        // A worker that lost the partition commits nothing more: the new owner's offset may
        // already be past this one's.
        if state.abandoned || low <= state.committed {
            return;
        }
        match self.backend.commit(self.topic, self.group, self.partition, low).await {
            Ok(()) => {
                state.committed = low;
                self.health.recover(self.partition);
            }
            Err(e) => {
                self.health.fail(self.partition, &e);
                tracing::warn!(stage = self.group, partition = self.partition, error = %e, "commit failed; retrying");
            }
        }
    }
}

async fn sleep_until_ms(at: Option<u64>) {
    if let Some(at) = at {
        let wait = at.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
    }
}
