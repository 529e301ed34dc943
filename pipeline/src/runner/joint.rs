//! Runners whose partitions must have one owner together. Reconcile's three inputs (outcomes,
//! receipts, dead letters) write the same campaigns' rows and counters by read-modify-write, so
//! partition p of all three must be consumed by one process. Under partition leases they share
//! one coordinator ([`super::assign::coordinate`]): one lease per partition number, and its
//! holder runs the consumers of p of every member together; stopping p (shed, lost lease,
//! abandon) stops them all.
//!
//! It is not needed, and not used, without an assignment: one process then consumes every
//! partition of every member and serializes a partition's steps itself.

use super::assign::{self, Assignment};
use crate::stage::PartitionLease;
use crate::topic::Partition;
use crate::{Result, Shutdown};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// Runs one member's consumer of a partition until its stop signal.
pub(super) type MemberRun =
    Box<dyn Fn(Partition, Shutdown, Arc<PartitionLease>) -> BoxFuture<'static, ()> + Send + Sync>;

struct Member {
    run: MemberRun,
    partitions: u32,
    /// The member's start hook has run (consuming before it would lose what it restores).
    started: Arc<Barrier>,
    metrics: Arc<super::StageMetrics>,
}

/// Runners sharing partition ownership, named by the lease group (`partition:{name}:{p}`).
pub struct Joint {
    name: &'static str,
    members: Mutex<Vec<Member>>,
}

impl Joint {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self { name, members: Mutex::new(Vec::new()) })
    }

    /// Adds a member; the first member's counters carry the shared coordinator's lease counts.
    pub(super) fn join(
        &self,
        run: MemberRun,
        partitions: u32,
        started: Arc<Barrier>,
        metrics: Arc<super::StageMetrics>,
    ) {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).push(Member { run, partitions, started, metrics });
    }

    /// Starts the shared coordinator (after every member joined); without an assignment the
    /// members run their own consumers and this does nothing.
    pub fn start(&self, tasks: &mut JoinSet<Result<()>>, assignment: Option<Assignment>, shutdown: Shutdown) {
        let members = std::mem::take(&mut *self.members.lock().unwrap_or_else(|p| p.into_inner()));
        let Some(assignment) = assignment else { return };
        let Some(partitions) = members.first().map(|m| m.partitions) else { return };
        assert!(members.iter().all(|m| m.partitions == partitions), "joint runners need equal partition counts");
        let name = self.name;
        let metrics = members[0].metrics.clone();
        tasks.spawn(async move {
            for m in &members {
                m.started.wait().await;
            }
            let runs: Arc<Vec<MemberRun>> = Arc::new(members.into_iter().map(|m| m.run).collect());
            let run = move |p: Partition, stop: Shutdown, lease: Arc<PartitionLease>| {
                let runs = runs.clone();
                async move {
                    futures::future::join_all(runs.iter().map(|r| r(p, stop.clone(), lease.clone()))).await;
                }
            };
            assign::coordinate(name, partitions, assignment, shutdown, metrics, run).await;
            Ok(())
        });
    }
}
