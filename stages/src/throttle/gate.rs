//! The fair gate: weighted sharing of the run-ahead budget between tenants.
//!
//! At most `max_in_flight` messages (and `max_in_flight_per_tenant` per tenant) may sit
//! released-but-undelivered. The budget is one resource for every campaign, so a campaign that
//! wants some waits for it inside its step ([`FairGate::acquire`], up to a patience, then the
//! step hands its batch back and comes again): the runner then sees a busy lane, not one that
//! waits for itself, and fetches no more records while every lane is busy — backpressure, not
//! spilling. Among the campaigns waiting, budget goes by start-time fair queuing on a virtual
//! clock (messages granted / weight), so a 10M-recipient campaign cannot starve a 1k one of
//! another tenant; a tenant that was idle joins at the current virtual time (no banked credit).
//! A tenant at its own cap is told so at once (its lane waits; others go on).
//!
//! **Express reserve.** A saturated pipeline keeps the budget full, so a turn also waits for
//! deliver to return budget (tens of ms). A campaign's first steps (`Emitter::is_express`, the
//! runner's express lanes) need not: when its tenant is at the head of the fair queue (no
//! waiting tenant has a smaller virtual time) it may take its turn at once from a reserve
//! above `max_in_flight`, up to `express_reserve` more. It is the turn fair queuing would give
//! it anyway, taken without the wait; the tenant's own cap still holds, and the budget never
//! exceeds `max_in_flight + express_reserve`. A tenant that has been sending is behind the
//! head, so opening new campaigns does not move it ahead of the others.
//!
//! Budget returns when deliver commits its offsets on `messages.ready` ([`Outstanding`], read
//! through the topic backend, so this works the same with Fluvio).
//!
//! It is not: a rate limit (token buckets are) and it never drops a message.

use pipeline::{Offset, Partition};
use schemas::TenantId;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Share {
    in_flight: u64,
    /// Virtual time: messages granted / weight.
    vtime: f64,
    waiting: u32,
}

#[derive(Debug, Default)]
struct GateState {
    in_flight: u64,
    tenants: HashMap<TenantId, Share>,
}

impl GateState {
    /// The smallest virtual time among the tenants `counts` keeps (infinite if none).
    fn min_vtime(&self, counts: impl Fn(&Share) -> bool) -> f64 {
        self.tenants.values().filter(|s| counts(s)).map(|s| s.vtime).fold(f64::INFINITY, f64::min)
    }
}

/// What [`FairGate::acquire`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many messages may be released.
    Granted(u64),
    /// The tenant has its own cap in flight: come back when deliver took some.
    TenantFull,
    /// No budget came within the patience.
    Timeout,
}

/// Weighted fair sharing of a global in-flight budget between tenants.
pub struct FairGate {
    max_in_flight: u64,
    max_per_tenant: u64,
    express_reserve: u64,
    state: Mutex<GateState>,
    changed: Notify,
}

impl FairGate {
    pub fn new(max_in_flight: u64, max_per_tenant: u64) -> Self {
        Self {
            max_in_flight: max_in_flight.max(1),
            max_per_tenant: max_per_tenant.max(1),
            express_reserve: 0,
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// Budget above `max_in_flight` that express requests at the head of the fair queue may
    /// take without waiting (see the module docs); none by default.
    pub fn with_express_reserve(mut self, reserve: u64) -> Self {
        self.express_reserve = reserve;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (up to `patience`) until `tenant` may release `want` messages, then accounts them
    /// as in flight. A batch goes whole (one fair turn), or at once when nothing is in flight.
    /// `express`: a campaign's first steps, which may use the express reserve.
    pub async fn acquire(&self, tenant: TenantId, weight: u32, want: u64, patience: Duration, express: bool) -> Grant {
        let weight = weight.max(1);
        {
            let mut state = self.lock();
            // A tenant that was idle joins at the current virtual time: no banked credit.
            let floor = state.min_vtime(|t| t.waiting > 0 || t.in_flight > 0);
            let share = state.tenants.entry(tenant).or_default();
            if share.in_flight > 0 && share.in_flight + want > self.max_per_tenant {
                return Grant::TenantFull;
            }
            if share.waiting == 0 && share.in_flight == 0 && floor.is_finite() {
                share.vtime = share.vtime.max(floor);
            }
            share.waiting += 1;
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(grant) = self.try_turn(tenant, weight, want, express) {
                return grant;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut state = self.lock();
                if let Some(share) = state.tenants.get_mut(&tenant) {
                    share.waiting = share.waiting.saturating_sub(1);
                }
                drop(state);
                // Someone else may be next now.
                self.changed.notify_waiters();
                return Grant::Timeout;
            }
        }
    }

    /// Grants `want` if it is `tenant`'s turn and the budget fits (or, `express`, if `tenant`
    /// heads the fair queue and the reserve fits).
    fn try_turn(&self, tenant: TenantId, weight: u32, want: u64, express: bool) -> Option<Grant> {
        let mut state = self.lock();
        let global = state.in_flight;
        let own_fits = |s: &Share| s.in_flight == 0 || s.in_flight + want <= self.max_per_tenant;
        let fits = |s: &Share| (global == 0 || global + want <= self.max_in_flight) && own_fits(s);
        let best = state
            .tenants
            .iter()
            .filter(|(_, s)| s.waiting > 0 && fits(s))
            .min_by(|a, b| a.1.vtime.total_cmp(&b.1.vtime))
            .map(|(id, _)| *id);
        let express_turn = express
            && global + want <= self.max_in_flight + self.express_reserve
            && state.tenants.get(&tenant).is_some_and(|s| own_fits(s) && s.vtime <= state.min_vtime(|t| t.waiting > 0));
        if best != Some(tenant) && !express_turn {
            return None;
        }
        state.in_flight += want;
        if let Some(share) = state.tenants.get_mut(&tenant) {
            share.in_flight += want;
            share.waiting -= 1;
            share.vtime += want as f64 / f64::from(weight);
        }
        drop(state);
        self.changed.notify_waiters();
        Some(Grant::Granted(want))
    }

    /// Returns budget: `n` messages of `tenant` were taken by deliver (or never released).
    pub fn release(&self, tenant: TenantId, n: u64) {
        if n == 0 {
            return;
        }
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(n);
            if let Some(s) = state.tenants.get_mut(&tenant) {
                s.in_flight = s.in_flight.saturating_sub(n);
            }
        }
        self.changed.notify_waiters();
    }

    /// Forgets tenants with nothing in flight and nobody waiting (memory stays bounded by the
    /// active ones; a tenant coming back joins at the current virtual time anyway).
    pub fn sweep(&self) {
        self.lock().tenants.retain(|_, s| s.in_flight > 0 || s.waiting > 0);
    }

    /// Messages currently in flight (released, not yet taken by deliver).
    pub fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }
}

/// Per partition, in offset order: `(offset, tenant, messages)`.
type Released = HashMap<Partition, VecDeque<(Offset, TenantId, u64)>>;

/// Released `messages.ready` records not yet consumed by deliver.
#[derive(Default)]
pub struct Outstanding {
    partitions: Mutex<Released>,
}

impl Outstanding {
    fn lock(&self) -> std::sync::MutexGuard<'_, Released> {
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
    use std::sync::Arc;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn shares_by_weight() {
        // Two tenants always waiting; budget of one batch at a time. Tenant 2 has weight 3.
        let gate = Arc::new(FairGate::new(100, 1_000));
        let granted = Arc::new(Mutex::new(HashMap::<TenantId, u64>::new()));
        let mut tasks = Vec::new();
        for (tenant, weight) in [(TenantId(1), 1), (TenantId(2), 3)] {
            let (gate, granted) = (gate.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    if gate.acquire(tenant, weight, 100, Duration::from_secs(5), false).await != Grant::Granted(100) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    *granted.lock().unwrap().entry(tenant).or_default() += 100;
                    // Budget comes back when deliver takes the batch, while the tenant already
                    // waits for its next grant (as in the stage).
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        gate.release(tenant, 100);
                    });
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snapshot = granted.lock().unwrap().clone();
        let (a, b) = (snapshot[&TenantId(1)] as f64, snapshot[&TenantId(2)] as f64);
        let share = b / (a + b);
        assert!((share - 0.75).abs() < 0.05, "weighted share {share} (a={a}, b={b})");
        for t in tasks {
            t.abort();
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_full_tenant_is_told_at_once_and_a_full_gate_times_out() {
        let gate = FairGate::new(1_000, 600);
        assert_eq!(gate.acquire(TenantId(1), 1, 500, Duration::from_secs(1), false).await, Grant::Granted(500));
        assert_eq!(gate.acquire(TenantId(1), 1, 500, Duration::from_secs(1), false).await, Grant::TenantFull);
        assert_eq!(gate.acquire(TenantId(2), 1, 500, Duration::from_secs(1), false).await, Grant::Granted(500));
        assert_eq!(gate.acquire(TenantId(3), 1, 500, Duration::from_millis(50), false).await, Grant::Timeout);
        gate.release(TenantId(1), 500);
        assert_eq!(gate.acquire(TenantId(3), 1, 500, Duration::from_millis(50), false).await, Grant::Granted(500));
        gate.release(TenantId(2), 500);
        gate.release(TenantId(3), 500);
        gate.sweep();
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_express_turn_at_the_head_skips_the_wait_within_the_reserve() {
        let patience = Duration::from_millis(50);
        let gate = Arc::new(FairGate::new(1_000, 1_000).with_express_reserve(300));
        assert_eq!(gate.acquire(TenantId(1), 1, 1_000, patience, false).await, Grant::Granted(1_000));
        // The budget is full: a normal turn waits for deliver; an express one goes at once.
        assert_eq!(gate.acquire(TenantId(2), 1, 200, patience, false).await, Grant::Timeout);
        assert_eq!(gate.acquire(TenantId(2), 1, 200, patience, true).await, Grant::Granted(200));
        // The reserve is bounded: 1,200 + 200 is past 1,000 + 300.
        assert_eq!(gate.acquire(TenantId(3), 1, 200, patience, true).await, Grant::Timeout);
        assert_eq!(gate.acquire(TenantId(3), 1, 100, patience, true).await, Grant::Granted(100));
        assert_eq!(gate.in_flight(), 1_300);
        gate.release(TenantId(3), 100);
        // Tenant 4 waits at the head of the queue (it joins at the smallest virtual time,
        // tenant 1's); tenant 2 has been granted more, so its express request is not the
        // head's turn and waits like any other, although the reserve has room.
        let head = gate.clone();
        let waiter = tokio::spawn(async move { head.acquire(TenantId(4), 1, 100, patience, false).await });
        tokio::task::yield_now().await;
        assert_eq!(gate.acquire(TenantId(2), 1, 50, patience, true).await, Grant::Timeout);
        assert_eq!(waiter.await.unwrap(), Grant::Timeout, "the budget is full for normal turns");
        assert_eq!(gate.acquire(TenantId(4), 1, 50, patience, true).await, Grant::Granted(50));
        assert_eq!(gate.in_flight(), 1_250);
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
