//! Runs a [`Stage`] over its input topic: one consumer per assigned partition, records in lanes.
//!
//! Per partition (the parallel-consumer pattern): fetch → decode → put each record in its
//! stage-chosen lane → run up to `concurrent_lanes` steps at once, each a batch of one lane's
//! due records → produce what the step emitted → mark its offsets done → commit the lowest
//! offset not yet done. A lane that waits ([`crate::Step::Wait`], a due header, a retry) never
//! holds up another lane. Memory is bounded by configuration: at most `partition_records`
//! records per partition are in memory (fetching stops there). A lane that waits longer than
//! `hold_after` (or whose head has been unfinished that long when it waits again), a record due
//! that far ahead, and — when the partition's memory is full — the waiting lane holding the most
//! records are set aside in the durable held store ([`crate::held`]), which lets the committed
//! offset move past them and other lanes' records in; they come back `lane_queue` at a time.
//! A lane's first steps are express ([`ahead`]): while the partition's memory is full, its
//! records are read ahead of the fetch position (embedded topics), its steps may produce into
//! the express reserve of bounded topics and start past `concurrent_lanes`, so a new campaign
//! does not queue behind the big ones filling a saturated pipeline.
//!
//! A failing step is retried with its hint up to `max_attempts`, then dead-lettered with the
//! reason; undecodable records are dead-lettered on their own. Backend errors (fetch, produce,
//! commit, held store) are retried with backoff and reported in [`StageHealth`]; a partition loop
//! never ends on its own. On shutdown a partition stops fetching, lets running steps finish for
//! the drain grace, commits what is done and exits; unfinished records are redone after restart.

mod ahead;
pub mod assign;
mod joint;
mod partition;
mod records;
mod settle;

pub use joint::Joint;

use crate::held::HeldRecords;
use crate::stage::Stage;
use crate::topic::{Partition, Topic, TopicBackend};
use crate::{Result, Shutdown};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// How a stage is driven.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Records per `process` call (all of one lane).
    pub max_batch: usize,
    /// How long a fetch waits for the first record.
    pub fetch_wait: Duration,
    /// Attempts of one batch before it is dead-lettered.
    pub max_attempts: u32,
    /// Held records a lane loads back into memory at a time.
    pub lane_queue: usize,
    /// Unfinished records a partition keeps in memory; it stops fetching at this many.
    pub partition_records: usize,
    /// Steps running at once per partition.
    pub concurrent_lanes: usize,
    /// A lane waiting longer than this (or whose head has been unfinished this long when it
    /// waits again) sets its records aside in the held store.
    pub hold_after: Duration,
    /// How often the stage's `on_tick` runs.
    pub tick: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_batch: 4,
            fetch_wait: Duration::from_millis(100),
            max_attempts: 8,
            lane_queue: 8,
            partition_records: 128,
            concurrent_lanes: 16,
            hold_after: Duration::from_secs(2),
            tick: Duration::from_millis(5),
        }
    }
}

/// Counters a runner keeps per stage (exported as metrics by the binary).
#[derive(Debug, Default)]
pub struct StageMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub batches: AtomicU64,
    pub failures: AtomicU64,
    pub dead_records: AtomicU64,
    /// Records set aside in the held store.
    pub held_records: AtomicU64,
    /// Sum of step processing time in microseconds.
    pub busy_us: AtomicU64,
    /// Partition leases this process took (at start, from a dead worker, or rebalanced).
    pub partitions_taken: AtomicU64,
    /// Partition leases this process lost to another worker or could not renew in time.
    pub partitions_lost: AtomicU64,
    /// Partitions whose running steps outlived the drain grace and were dropped (their records
    /// are redone by the next owner; the claims keep that from sending twice).
    pub drain_overruns: AtomicU64,
}

/// A stage's health: the last backend error a partition loop hit, if it has not recovered.
#[derive(Debug, Default)]
pub struct StageHealth {
    failing: Mutex<std::collections::BTreeMap<Partition, String>>,
}

impl StageHealth {
    fn fail(&self, partition: Partition, error: &crate::Error) {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).insert(partition, error.to_string());
    }
    fn recover(&self, partition: Partition) {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).remove(&partition);
    }
    /// Partitions whose loop is currently failing, with the error.
    pub fn failing(&self) -> Vec<(Partition, String)> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(p, e)| (*p, e.clone())).collect()
    }
}

/// What a running stage exposes: its counters and health.
#[derive(Clone)]
pub struct StageHandle {
    pub name: &'static str,
    pub metrics: Arc<StageMetrics>,
    pub health: Arc<StageHealth>,
}

/// What every runner of a process shares: the topics, the held store, the shutdown signal and
/// the metrics board.
#[derive(Clone)]
pub struct Runtime {
    pub backend: Arc<dyn TopicBackend>,
    pub held: Arc<dyn HeldRecords>,
    pub shutdown: Shutdown,
    pub board: Arc<crate::board::Board>,
    /// `None`: this process consumes every partition (one process owns the topics). `Some`:
    /// partitions are shared with other processes by lease ([`assign`]).
    pub assignment: Option<assign::Assignment>,
}

/// How often a runner publishes its stage's snapshot to the board.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Spawns the stage's consumers (one per partition of `input`: all of them, or with an
/// [`assign::Assignment`] those this process holds the lease of) and its tick, into `tasks`.
pub fn spawn<S: Stage>(
    tasks: &mut JoinSet<Result<()>>,
    stage: Arc<S>,
    input: Topic<S::In>,
    runtime: &Runtime,
    config: RunnerConfig,
) -> StageHandle {
    spawn_in(tasks, stage, input, runtime, config, None)
}

/// [`spawn`], as a member of `joint` when given: under an assignment its partitions are then
/// owned together with the other members' (see [`Joint`]; start it after every member joined).
pub fn spawn_in<S: Stage>(
    tasks: &mut JoinSet<Result<()>>,
    stage: Arc<S>,
    input: Topic<S::In>,
    runtime: &Runtime,
    config: RunnerConfig,
    joint: Option<&Joint>,
) -> StageHandle {
    let Runtime { backend, held, shutdown, board, assignment } = runtime.clone();
    let name = stage.name();
    let handle = StageHandle { name, metrics: Arc::default(), health: Arc::default() };
    let room = crate::room::Room::new(backend.clone());
    let partitions: Vec<Partition> = (0..input.spec.partitions()).collect();
    let consumers = if assignment.is_some() { 1 } else { partitions.len() };
    let started = Arc::new(tokio::sync::Barrier::new(consumers + 1));
    {
        let (stage, shutdown, config, started) = (stage.clone(), shutdown.clone(), config.clone(), started.clone());
        let (start_backend, handle) = (backend.clone(), handle.clone());
        tasks.spawn(async move {
            // The start hook (e.g. chunk resuming campaigns) is retried until it succeeds:
            // consuming before it would lose what it restores.
            let _ = persist("running the start hook", 0, &handle.health, &shutdown, || async {
                let mut out = crate::stage::Emitter::new(start_backend.clone());
                stage.on_start(&mut out).await.map_err(|e| crate::Error::Transient(e.to_string()))?;
                out.flush().await.map(|_| ())
            })
            .await;
            started.wait().await;
            let mut published = tokio::time::Instant::now();
            while !shutdown.is_triggered() {
                tokio::select! {
                    _ = tokio::time::sleep(config.tick) => stage.on_tick().await,
                    _ = shutdown.wait() => {}
                }
                if published.elapsed() >= PUBLISH_EVERY {
                    published = tokio::time::Instant::now();
                    board.publish(stage.name(), snapshot(&handle, stage.metrics()));
                }
            }
            stage.on_stop().await;
            board.publish(stage.name(), snapshot(&handle, stage.metrics()));
            Ok(())
        });
    }
    let consumer = {
        let (stage, handle) = (stage.clone(), handle.clone());
        move |partition: Partition, shutdown: Shutdown, lease| partition::Consumer {
            stage: stage.clone(),
            topic: input.name(),
            group: name,
            partition,
            backend: backend.clone(),
            held: held.clone(),
            room: room.clone(),
            config: config.clone(),
            shutdown,
            metrics: handle.metrics.clone(),
            health: handle.health.clone(),
            lease,
        }
    };
    match assignment {
        None => {
            for partition in partitions {
                let (consumer, started) = (consumer(partition, shutdown.clone(), None), started.clone());
                tasks.spawn(async move {
                    started.wait().await;
                    consumer.run().await;
                    Ok(())
                });
            }
        }
        Some(_) if joint.is_some() => {
            let run: joint::MemberRun = Box::new(move |p, stop, lease| Box::pin(consumer(p, stop, Some(lease)).run()));
            if let Some(joint) = joint {
                joint.join(run, input.spec.partitions(), started, handle.metrics.clone());
            }
        }
        Some(assignment) => {
            let count = input.spec.partitions();
            let metrics = handle.metrics.clone();
            tasks.spawn(async move {
                started.wait().await;
                let run = move |p, stop, lease| consumer(p, stop, Some(lease)).run();
                assign::coordinate(name, count, assignment, shutdown, metrics, run).await;
                Ok(())
            });
        }
    }
    handle
}

/// The runner's counters and health, with the stage's own samples.
fn snapshot(handle: &StageHandle, mut samples: Vec<crate::board::Sample>) -> Vec<crate::board::Sample> {
    use crate::board::Sample;
    use std::sync::atomic::Ordering::Relaxed;
    let m = &handle.metrics;
    let counters = [
        ("herald_stage_records_in_total", "records consumed", &m.records_in),
        ("herald_stage_records_out_total", "records produced", &m.records_out),
        ("herald_stage_batches_total", "steps run", &m.batches),
        ("herald_stage_failures_total", "failed step attempts", &m.failures),
        ("herald_stage_dead_records_total", "records dead-lettered", &m.dead_records),
        ("herald_stage_held_records_total", "records set aside in the held store", &m.held_records),
        ("herald_stage_busy_microseconds_total", "time spent in steps", &m.busy_us),
        ("herald_stage_partitions_taken_total", "partition leases taken", &m.partitions_taken),
        ("herald_stage_partitions_lost_total", "partition leases lost to another worker", &m.partitions_lost),
        ("herald_stage_drain_overruns_total", "partitions whose steps outlived the drain grace", &m.drain_overruns),
    ];
    for (name, help, value) in counters {
        samples.push(Sample::counter(name, help, value.load(Relaxed) as f64).label("stage", handle.name));
    }
    let failing = handle.health.failing().len() as f64;
    samples.push(
        Sample::gauge("herald_stage_failing_partitions", "partitions whose backend calls are failing", failing)
            .label("stage", handle.name),
    );
    samples
}

/// Retries a backend call with backoff until it succeeds or shutdown's grace expires, reporting
/// failures in `health` (a partition loop never ends on a backend error).
async fn persist<T, F, Fut>(
    what: &str,
    partition: Partition,
    health: &StageHealth,
    shutdown: &Shutdown,
    mut call: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Ok(v) => {
                health.recover(partition);
                return Some(v);
            }
            Err(e) => {
                health.fail(partition, &e);
                tracing::warn!(partition, error = %e, transient = e.is_transient(), "{what} failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.expired() => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    schemas::now_ms()
}

#[cfg(test)]
mod tests;
