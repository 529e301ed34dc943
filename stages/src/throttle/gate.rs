//! The fair gate: weighted sharing of the run-ahead budget between tenants, without waiting.
//!
//! At most `max_in_flight` messages (and `max_in_flight_per_tenant` per tenant) may sit
//! released-but-undelivered. While several tenants want to release, each may hold at most its
//! weighted share of the budget (`max_in_flight × weight / active weight`), so a tenant with a
//! 10M-recipient campaign holds no more of it than one with 1k. A tenant is active while it has
//! messages in flight or asked within [`ACTIVE_FOR`]. A tenant that finds no room is told to try
//! again shortly (its lane waits; nothing blocks).
//!
//! Budget returns when deliver commits its offsets on `messages.ready` ([`Outstanding`], read
//! through the topic backend, so this works the same with Fluvio).
//!
//! It is not: a rate limit (token buckets are) and it never drops a message.

use pipeline::{Offset, Partition};
use schemas::TenantId;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tenant that asked this recently counts as active (has a share reserved for it).
pub const ACTIVE_FOR: Duration = Duration::from_millis(250);

/// The smallest share a tenant gets, however many are active (keeps batches useful).
pub const MIN_SHARE: u64 = 16;

#[derive(Debug)]
struct Share {
    in_flight: u64,
    weight: u32,
    last_ask: Instant,
}

#[derive(Debug, Default)]
struct GateState {
    in_flight: u64,
    tenants: HashMap<TenantId, Share>,
}

/// Weighted fair sharing of a global in-flight budget between tenants.
pub struct FairGate {
    max_in_flight: u64,
    max_per_tenant: u64,
    state: Mutex<GateState>,
}

impl FairGate {
    pub fn new(max_in_flight: u64, max_per_tenant: u64) -> Self {
        Self { max_in_flight: max_in_flight.max(1), max_per_tenant: max_per_tenant.max(1), state: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants up to `want` messages to `tenant` now (0: none; ask again shortly).
    pub fn try_acquire(&self, tenant: TenantId, weight: u32, want: u64, now: Instant) -> u64 {
        let mut state = self.lock();
        let weight = weight.max(1);
        let share = state.tenants.entry(tenant).or_insert(Share { in_flight: 0, weight, last_ask: now });
        share.weight = weight;
        share.last_ask = now;
        let mine = share.in_flight;
        let active_weight: u64 = state
            .tenants
            .values()
            .filter(|s| s.in_flight > 0 || now.saturating_duration_since(s.last_ask) < ACTIVE_FOR)
            .map(|s| u64::from(s.weight))
            .sum();
        let fair = (self.max_in_flight * u64::from(weight) / active_weight.max(1)).max(MIN_SHARE);
        let cap = fair.min(self.max_per_tenant);
        let room = cap.saturating_sub(mine).min(self.max_in_flight.saturating_sub(state.in_flight));
        // Nothing at all in flight: one batch may always go (a budget smaller than a batch
        // must not stall the pipeline).
        let granted = if state.in_flight == 0 { want } else { want.min(room) };
        if granted > 0 {
            state.in_flight += granted;
            if let Some(s) = state.tenants.get_mut(&tenant) {
                s.in_flight += granted;
            }
        }
        granted
    }

    /// Returns budget: `n` messages of `tenant` were taken by deliver (or never released).
    pub fn release(&self, tenant: TenantId, n: u64) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(n);
        if let Some(s) = state.tenants.get_mut(&tenant) {
            s.in_flight = s.in_flight.saturating_sub(n);
        }
    }

    /// Forgets tenants idle for a while (memory stays bounded by the active ones).
    pub fn sweep(&self, now: Instant) {
        self.lock()
            .tenants
            .retain(|_, s| s.in_flight > 0 || now.saturating_duration_since(s.last_ask) < ACTIVE_FOR * 4);
    }

    /// Messages currently in flight (released, not yet taken by deliver).
    pub fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }
}

/// Released `messages.ready` records not yet consumed by deliver, per partition, in offset
/// order: `(offset, tenant, messages)`.
#[derive(Default)]
pub struct Outstanding {
    partitions: Mutex<HashMap<Partition, VecDeque<(Offset, TenantId, u64)>>>,
}

impl Outstanding {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Partition, VecDeque<(Offset, TenantId, u64)>>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, partition: Partition, offset: Offset, tenant: TenantId, n: u64) {
        let mut partitions = self.lock();
        let queue = partitions.entry(partition).or_default();
        // Produced offsets grow per partition; keep the queue sorted if two steps interleave.
        let at = queue.partition_point(|(o, _, _)| *o < offset);
        queue.insert(at, (offset, tenant, n));
    }

    /// Partitions with records outstanding.
    pub fn partitions(&self) -> Vec<Partition> {
        self.lock().iter().filter(|(_, q)| !q.is_empty()).map(|(p, _)| *p).collect()
    }

    /// Removes and returns the records of `partition` below the consumer's committed offset.
    pub fn take_done(&self, partition: Partition, committed: Offset) -> Vec<(TenantId, u64)> {
        let mut partitions = self.lock();
        let Some(queue) = partitions.get_mut(&partition) else { return Vec::new() };
        let mut done = Vec::new();
        while queue.front().is_some_and(|(o, _, _)| *o < committed) {
            done.extend(queue.pop_front().map(|(_, t, n)| (t, n)));
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_by_weight_among_active_tenants() {
        let gate = FairGate::new(1_000, 1_000);
        let now = Instant::now();
        let (a, b) = (TenantId(1), TenantId(2));
        // Both ask; b has weight 3: a may hold 250, b 750.
        assert_eq!(gate.try_acquire(a, 1, 100, now), 100);
        assert_eq!(gate.try_acquire(b, 3, 1_000, now), 750);
        assert_eq!(gate.try_acquire(a, 1, 1_000, now), 150, "a's share is 250");
        assert_eq!(gate.try_acquire(a, 1, 1, now), 0);
        gate.release(a, 250);
        assert_eq!(gate.in_flight(), 750);
        // Once b has stopped asking and drained, a may use the whole budget.
        gate.release(b, 750);
        let later = now + ACTIVE_FOR * 2;
        assert_eq!(gate.try_acquire(a, 1, 2_000, later), 2_000, "nothing in flight: one batch always goes");
        gate.release(a, 2_000);
        assert_eq!(gate.try_acquire(a, 1, 900, later), 900);
    }

    #[test]
    fn a_thousand_tenants_each_get_a_minimum_share_and_the_budget_holds() {
        let gate = FairGate::new(4_000, 2_000);
        let now = Instant::now();
        for t in 0..1_000 {
            gate.try_acquire(TenantId(t), 1, 0, now); // everyone asks: all active
        }
        let mut granted = 0;
        for t in 0..1_000 {
            granted += gate.try_acquire(TenantId(t), 1, 500, now);
        }
        assert!(granted <= 4_000, "{granted}");
        assert_eq!(gate.try_acquire(TenantId(0), 1, 500, now), 0);
        gate.sweep(now + ACTIVE_FOR * 8);
        assert_eq!(gate.in_flight(), granted);
    }

    #[test]
    fn outstanding_releases_below_the_committed_offset() {
        let o = Outstanding::default();
        o.push(0, 5, TenantId(1), 10);
        o.push(0, 3, TenantId(2), 20);
        o.push(1, 0, TenantId(1), 5);
        assert_eq!(o.take_done(0, 4), vec![(TenantId(2), 20)]);
        assert_eq!(o.take_done(0, 4), vec![]);
        assert_eq!(o.take_done(0, 6), vec![(TenantId(1), 10)]);
        assert_eq!(o.partitions(), vec![1]);
    }
}
