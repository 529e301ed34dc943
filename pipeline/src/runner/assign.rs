//! Which partitions of a stage this process consumes, when several processes share the topics:
//! each partition is owned through a lease ([`Leases`], Redis in the distributed deployment),
//! so at most one live worker consumes it, and a fair share is taken by each.
//!
//! One coordinator per stage, every `ttl / 5`:
//! - **Membership**: the worker holds one member slot (`member:{group}:{i}`, the lowest it can
//!   take) and counts the slots others hold; its share is `ceil(partitions / members)`.
//! - **Renew** every partition it owns. A partition whose lease was refused (taken over) or
//!   could not be renewed for `2/3 ttl` is stopped at once (it may already be someone else's).
//! - **Shed** partitions above its share: stop (drain), then release the lease, so a newcomer
//!   takes them without waiting for expiry.
//! - **Take** free or expired partitions up to its share, starting at its slot's offset so
//!   workers spread instead of racing for the same partitions.
//!
//! On shutdown every partition drains, then its lease and the member slot are released.
//! A worker that dies holds its leases until they expire; the others take its partitions at
//! their next round after that, from the committed offsets.
//!
//! It is not: fencing. A worker paused past its lease may still finish a step it had started;
//! the writes that must not happen then (send claims) are fenced by the lease token in the
//! shared state.

use crate::stage::PartitionLease;
use crate::topic::Partition;
use crate::{Result, Shutdown};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Named leases with fencing tokens (the shared state's, through an adapter).
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the lease `name` for `holder` if it is free or expired, or renews it if `holder`
    /// has it; its token when held, `None` when another holder has it.
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>>;
    /// Whether `name` is held by anyone and unexpired (a read: it takes nothing).
    async fn live(&self, name: &str) -> Result<bool>;
    /// Gives the lease back if `token` is still current.
    async fn release(&self, name: &str, holder: &str, token: u64) -> Result<()>;
}

/// How this process takes part in partition ownership.
#[derive(Clone)]
pub struct Assignment {
    pub leases: Arc<dyn Leases>,
    /// This worker's name, unique among live workers (host, pid and a random part).
    pub holder: String,
    /// How long a lease lasts unrenewed: the longest a dead worker's partitions wait.
    pub ttl: Duration,
}

impl Assignment {
    /// The lease on `partition` of `group`'s input.
    pub fn partition_lease(group: &str, partition: Partition) -> String {
        format!("partition:{group}:{partition}")
    }
    fn member_slot(group: &str, slot: u32) -> String {
        format!("member:{group}:{slot}")
    }
}

struct Owned {
    token: u64,
    renewed: Instant,
    stop: Shutdown,
    task: JoinHandle<()>,
    /// Being given back: release the lease once the task ended.
    shedding: bool,
}

/// Runs the coordinator of one stage until `shutdown`; `run(partition, stop, lease)` consumes
/// a partition until `stop` is triggered.
pub(super) async fn coordinate<F, Fut>(
    group: &'static str,
    partitions: u32,
    a: Assignment,
    shutdown: Shutdown,
    metrics: Arc<super::StageMetrics>,
    run: F,
) where
    F: Fn(Partition, Shutdown, Arc<PartitionLease>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let round = (a.ttl / 5).max(Duration::from_millis(20));
    let mut owned: BTreeMap<Partition, Owned> = BTreeMap::new();
    let mut slot: Option<(u32, u64)> = None;
    while !shutdown.is_triggered() {
        let (mine, members) = membership(group, partitions, &a, &mut slot).await;
        let share = partitions.div_ceil(members.max(1)) as usize;
        renew(group, &a, &mut owned, &metrics).await;
        // Shed above the share (the highest partitions first), once a slot says who we are.
        let active = owned.values().filter(|o| !o.shedding).count();
        if mine.is_some() && active > share {
            for (p, o) in owned.iter_mut().rev().filter(|(_, o)| !o.shedding).take(active - share) {
                tracing::info!(stage = group, partition = p, share, "giving a partition back");
                o.shedding = true;
                o.stop.trigger();
            }
        }
        release_finished(group, &a, &mut owned).await;
        // Take free partitions up to the share.
        if let Some(slot_index) = mine {
            let start = (slot_index as usize * share) % partitions.max(1) as usize;
            for i in 0..partitions as usize {
                if owned.values().filter(|o| !o.shedding).count() >= share {
                    break;
                }
                let p = ((start + i) % partitions as usize) as Partition;
                if owned.contains_key(&p) {
                    continue;
                }
                let name = Assignment::partition_lease(group, p);
                if let Ok(Some(token)) = a.leases.acquire(&name, &a.holder, a.ttl).await {
                    tracing::info!(stage = group, partition = p, token, "took a partition");
                    metrics.partitions_taken.fetch_add(1, Relaxed);
                    let stop = Shutdown::new();
                    let task = tokio::spawn(run(p, stop.clone(), Arc::new(PartitionLease { name, token })));
                    owned.insert(p, Owned { token, renewed: Instant::now(), stop, task, shedding: false });
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(round) => {}
            _ = shutdown.wait() => {}
        }
    }
    // Drain: stop everything, keep renewing while partitions finish, then give all back.
    for o in owned.values_mut() {
        o.shedding = true;
        o.stop.trigger();
    }
    while !owned.is_empty() {
        renew(group, &a, &mut owned, &metrics).await;
        release_finished(group, &a, &mut owned).await;
        if !owned.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Some((i, token)) = slot {
        let _ = a.leases.release(&Assignment::member_slot(group, i), &a.holder, token).await;
    }
}

/// Keeps this worker's member slot; returns it and how many slots are held (itself included).
async fn membership(group: &str, slots: u32, a: &Assignment, slot: &mut Option<(u32, u64)>) -> (Option<u32>, u32) {
    if let Some((i, _)) = *slot {
        match a.leases.acquire(&Assignment::member_slot(group, i), &a.holder, a.ttl).await {
            Ok(Some(token)) => *slot = Some((i, token)),
            Ok(None) => *slot = None,
            Err(_) => {}
        }
    }
    // Other slots are only read: a slot taken to look at it would count, for a worker
    // counting at that instant, as one more member (shares would shrink and flap).
    let mut members = 0;
    for i in 0..slots {
        let name = Assignment::member_slot(group, i);
        let mine = slot.is_some_and(|(mine, _)| mine == i);
        if mine || a.leases.live(&name).await.unwrap_or(false) {
            members += 1;
        } else if slot.is_none() {
            if let Ok(Some(token)) = a.leases.acquire(&name, &a.holder, a.ttl).await {
                *slot = Some((i, token));
                members += 1;
            }
        }
    }
    (slot.map(|(i, _)| i), members)
}

/// Renews every owned partition; stops those whose lease is gone or could not be renewed for
/// two thirds of the TTL.
async fn renew(group: &str, a: &Assignment, owned: &mut BTreeMap<Partition, Owned>, metrics: &super::StageMetrics) {
    for (p, o) in owned.iter_mut() {
        match a.leases.acquire(&Assignment::partition_lease(group, *p), &a.holder, a.ttl).await {
            Ok(Some(token)) if token == o.token => o.renewed = Instant::now(),
            Ok(_) => {
                tracing::warn!(stage = group, partition = p, "lost a partition lease; stopping it");
                o.renewed = Instant::now() - a.ttl;
            }
            Err(e) => tracing::warn!(stage = group, partition = p, error = %e, "renewing a partition lease failed"),
        }
        if o.renewed.elapsed() > a.ttl * 2 / 3 && !o.stop.is_triggered() {
            metrics.partitions_lost.fetch_add(1, Relaxed);
            o.stop.trigger();
        }
    }
}

/// Gives back the leases of partitions whose consumer ended; forgets those it lost.
async fn release_finished(group: &str, a: &Assignment, owned: &mut BTreeMap<Partition, Owned>) {
    let done: Vec<Partition> = owned.iter().filter(|(_, o)| o.task.is_finished()).map(|(p, _)| *p).collect();
    for p in done {
        if let Some(o) = owned.remove(&p) {
            if o.renewed.elapsed() < a.ttl {
                let _ = a.leases.release(&Assignment::partition_lease(group, p), &a.holder, o.token).await;
            }
            tracing::info!(stage = group, partition = p, "partition stopped");
        }
    }
}
