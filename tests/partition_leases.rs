//! Workers sharing a stage's partitions by lease (`pipeline::runner::assign`), on the real
//! embedded topics and shared state: one worker takes every partition; a second one gets a
//! fair share (the first gives partitions back, drained, without waiting for expiry); a worker
//! killed without a drain loses its partitions to the survivor once its leases expire, and
//! every record is processed; a graceful stop hands everything back at once.

use pipeline::runner::assign::Assignment;
use pipeline::stage::{Emitter, Input, Lane, StageError, Step};
use pipeline::{runner, Partition, ProducerRecord, Runtime, Shutdown, Stage, Topic, TopicBackend};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::state::{SharedState, StateLeases};
use storage::{EmbeddedState, EmbeddedStore};
use tokio::task::JoinSet;

const WORK: Topic<(u32, u64)> = Topic::new("work", 8, None, |r| u64::from(r.0));
const TTL: Duration = Duration::from_millis(600);

#[derive(Default)]
struct Seen {
    /// Partitions each worker consumes now.
    owned: BTreeMap<String, BTreeSet<Partition>>,
    /// (partition, seq) -> the workers that processed it.
    processed: BTreeMap<(u32, u64), Vec<String>>,
}

struct Worker {
    holder: String,
    seen: Arc<Mutex<Seen>>,
}

impl Stage for Worker {
    type In = (u32, u64);
    fn name(&self) -> &'static str {
        "w"
    }
    fn lane(&self, input: &(u32, u64)) -> Lane {
        Lane(u64::from(input.0))
    }
    async fn process(&self, batch: Vec<Input<(u32, u64)>>, _out: &mut Emitter) -> Result<Step<(u32, u64)>, StageError> {
        let mut seen = self.seen.lock().unwrap();
        for input in batch {
            seen.processed.entry(input.value).or_default().push(self.holder.clone());
        }
        Ok(Step::Done)
    }
    async fn on_assigned(&self, partition: Partition) {
        self.seen.lock().unwrap().owned.entry(self.holder.clone()).or_default().insert(partition);
    }
    async fn on_revoked(&self, partition: Partition) {
        self.seen.lock().unwrap().owned.entry(self.holder.clone()).or_default().remove(&partition);
    }
}

struct Running {
    tasks: JoinSet<pipeline::Result<()>>,
    shutdown: Shutdown,
}

fn start(
    topics: &Arc<pipeline::EmbeddedTopics>,
    state: &Arc<dyn SharedState>,
    holder: &str,
    seen: &Arc<Mutex<Seen>>,
) -> Running {
    let shutdown = Shutdown::new();
    let runtime = Runtime {
        backend: topics.clone(),
        held: topics.held(),
        shutdown: shutdown.clone(),
        board: Arc::default(),
        assignment: Some(Assignment { leases: Arc::new(StateLeases(state.clone())), holder: holder.into(), ttl: TTL }),
    };
    let config = pipeline::RunnerConfig { fetch_wait: Duration::from_millis(10), ..Default::default() };
    let mut tasks = JoinSet::new();
    let worker = Arc::new(Worker { holder: holder.into(), seen: seen.clone() });
    runner::spawn(&mut tasks, worker, WORK, &runtime, config);
    Running { tasks, shutdown }
}

async fn produce(topics: &Arc<pipeline::EmbeddedTopics>, seqs: std::ops::Range<u64>) {
    let records = (0..8u32)
        .flat_map(|p| seqs.clone().map(move |s| (p, s)))
        .map(|(p, s)| ProducerRecord {
            topic: "work",
            partition: p,
            key: u64::from(p),
            headers: Default::default(),
            value: schemas::codec::encode(&(p, s)).unwrap(),
        })
        .collect();
    topics.produce(records).await.unwrap();
}

async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "timed out after {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

fn owned(seen: &Mutex<Seen>, holder: &str) -> usize {
    seen.lock().unwrap().owned.get(holder).map_or(0, BTreeSet::len)
}

fn all_processed(seen: &Mutex<Seen>, seqs: std::ops::Range<u64>) -> bool {
    let seen = seen.lock().unwrap();
    (0..8u32).all(|p| seqs.clone().all(|s| seen.processed.contains_key(&(p, s))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_partitions_by_lease_on_the_embedded_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store"), Default::default()).unwrap());
    scenario(dir.path(), Arc::new(EmbeddedState::new(store))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_partitions_by_lease_on_redis() {
    let Some(server) = storage::testing::servers::RedisServer::start("partition leases shared through Redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = storage::redis::RedisState::new(storage::redis::RedisConfig::new(server.url())).unwrap();
    scenario(dir.path(), Arc::new(state)).await;
}

/// Shared topics on disk in `dir`; workers whose leases live in `state`.
async fn scenario(dir: &std::path::Path, state: Arc<dyn SharedState>) {
    let topics = pipeline::EmbeddedTopics::open_with_consumers(
        &dir.join("topics"),
        &[WORK.spec],
        &[("work", "w")],
        Default::default(),
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));

    // Alone, a worker takes every partition.
    let a = start(&topics, &state, "a", &seen);
    until("a owns all 8", Duration::from_secs(10), || owned(&seen, "a") == 8).await;
    produce(&topics, 0..10).await;
    until("the first records processed", Duration::from_secs(10), || all_processed(&seen, 0..10)).await;

    // A second worker gets half: the first gives four back (drained, released, no expiry wait).
    let b = start(&topics, &state, "b", &seen);
    let rebalanced =
        until("4 and 4", Duration::from_secs(10), || owned(&seen, "a") == 4 && owned(&seen, "b") == 4).await;
    {
        let s = seen.lock().unwrap();
        let (pa, pb) = (&s.owned["a"], &s.owned["b"]);
        assert!(pa.is_disjoint(pb), "a partition with two owners: {pa:?} {pb:?}");
    }
    produce(&topics, 10..20).await;
    until("the second records processed", Duration::from_secs(10), || all_processed(&seen, 10..20)).await;
    {
        let s = seen.lock().unwrap();
        for p in 0..8u32 {
            let by: BTreeSet<&String> = (10..20).flat_map(|q| s.processed[&(p, q)].iter()).collect();
            assert_eq!(by.len(), 1, "partition {p} consumed by {by:?} while both ran");
            let holder = by.into_iter().next().unwrap();
            assert!(s.owned[holder].contains(&p), "{holder} consumed {p} without owning it");
        }
    }

    // Kill b without a drain (its leases stay until they expire); a takes everything back.
    let mut b = b;
    b.tasks.abort_all();
    while b.tasks.join_next().await.is_some() {}
    seen.lock().unwrap().owned.remove("b");
    let killed = Instant::now();
    produce(&topics, 20..30).await;
    until("a owns all 8 again", TTL * 4, || owned(&seen, "a") == 8).await;
    let takeover = killed.elapsed();
    until("the third records processed", Duration::from_secs(10), || all_processed(&seen, 20..30)).await;

    // A graceful stop drains and hands every lease back: a new worker takes them at once.
    a.shutdown.trigger();
    let mut a = a;
    while let Some(r) = a.tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let c = start(&topics, &state, "c", &seen);
    let handed = until("c owns all 8", TTL / 2, || owned(&seen, "c") == 8).await;
    c.shutdown.trigger();
    eprintln!("rebalance to 4+4 in {rebalanced:?}; takeover after a kill in {takeover:?} (ttl {TTL:?}); after a graceful stop in {handed:?}");
    assert!(takeover < TTL * 2, "takeover took {takeover:?}");
}
