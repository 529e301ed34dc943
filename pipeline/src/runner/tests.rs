//! The runner over the embedded backend: retries, dead letters, commits, lanes that wait
//! without holding others up, the held store (spill, order, recovery after restart), due
//! records.

use super::*;
use crate::stage::{Emitter, Input, Lane, StageError, Step};
use crate::topic::{ProducerRecord, TopicSpec};
use crate::{topics, EmbeddedTopics};
use schemas::codec;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

const IN: Topic<(u64, u64)> = Topic::new("in", 1, None, |r| r.0);
const OUT: Topic<(u64, u64)> = Topic::new("out", 1, None, |r| r.0);

fn open(dir: &std::path::Path) -> Arc<EmbeddedTopics> {
    let specs: Vec<TopicSpec> = vec![IN.spec, OUT.spec, topics::DEAD_RECORDS.spec];
    EmbeddedTopics::open_with_consumers(dir, &specs, &[("in", "t")], Default::default()).unwrap()
}

/// Records are `(lane, value)`. Lane 99 waits far ahead (replaced by value + 1000) until
/// `release` is set; value 3 fails once transiently; value 7 always fails permanently.
struct Probe {
    failures_of_three: AtomicU32,
    release: std::sync::atomic::AtomicBool,
    seen: Mutex<Vec<(u64, u64)>>,
    /// How long lane 99 waits each time.
    wait_ms: u64,
}

impl Probe {
    fn new() -> Arc<Self> {
        Self::waiting(60_000)
    }
    fn waiting(wait_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            failures_of_three: AtomicU32::new(0),
            release: Default::default(),
            seen: Mutex::default(),
            wait_ms,
        })
    }
}

impl Stage for Probe {
    type In = (u64, u64);
    fn name(&self) -> &'static str {
        "t"
    }
    fn lane(&self, input: &(u64, u64)) -> Lane {
        Lane(input.0)
    }
    async fn process(
        &self,
        batch: Vec<Input<(u64, u64)>>,
        out: &mut Emitter,
    ) -> std::result::Result<Step<(u64, u64)>, StageError> {
        for (i, input) in batch.iter().enumerate() {
            let (lane, value) = input.value;
            if lane == 99 && value < 1000 && !self.release.load(Ordering::SeqCst) {
                // Far ahead: the runner must hold this lane aside, not block the partition.
                return Ok(Step::Wait {
                    from: i,
                    replacement: Some((lane, value + 1000)),
                    until_ms: schemas::now_ms() + self.wait_ms,
                });
            }
            if value == 3 && self.failures_of_three.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(StageError::retry(Duration::from_millis(1), "flaky"));
            }
            if value == 7 {
                return Err(StageError::permanent("seven is not allowed"));
            }
            self.seen.lock().unwrap().push((lane, value));
            out.emit(&OUT, &(lane, value * 2)).map_err(crate::stage::transient)?;
        }
        Ok(Step::Done)
    }
}

fn config() -> RunnerConfig {
    RunnerConfig {
        max_batch: 2,
        fetch_wait: Duration::from_millis(5),
        lane_queue: 2,
        partition_records: 16,
        hold_after: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn produce(backend: &Arc<EmbeddedTopics>, records: &[(u64, u64)]) {
    let records = records
        .iter()
        .map(|r| ProducerRecord {
            topic: "in",
            partition: 0,
            key: r.0,
            headers: Default::default(),
            value: codec::encode(r).unwrap(),
        })
        .collect();
    backend.produce(records).await.unwrap();
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn start(backend: &Arc<EmbeddedTopics>, stage: Arc<Probe>) -> (JoinSet<Result<()>>, Shutdown, StageHandle) {
    start_with(backend, stage, config())
}

fn start_with(
    backend: &Arc<EmbeddedTopics>,
    stage: Arc<Probe>,
    config: RunnerConfig,
) -> (JoinSet<Result<()>>, Shutdown, StageHandle) {
    let shutdown = Shutdown::new();
    let mut tasks = JoinSet::new();
    let runtime = Runtime {
        backend: backend.clone(),
        held: backend.held(),
        shutdown: shutdown.clone(),
        board: Arc::default(),
        assignment: None,
    };
    let handle = spawn(&mut tasks, stage, IN, &runtime, config);
    (tasks, shutdown, handle)
}

async fn stop(mut tasks: JoinSet<Result<()>>, shutdown: Shutdown) {
    shutdown.trigger();
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_transient_dead_letters_permanent_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    produce(&backend, &[(1, 1), (1, 3), (1, 7), (1, 5)]).await;
    backend
        .produce(vec![ProducerRecord {
            topic: "in",
            partition: 0,
            key: 1,
            headers: Default::default(),
            value: vec![9, 9],
        }])
        .await
        .unwrap();
    let stage = Probe::new();
    let (tasks, shutdown, handle) = start(&backend, stage.clone());
    let b = backend.clone();
    let committed = move || futures::executor::block_on(b.committed("in", "t", 0)).unwrap();
    until("all committed", || committed() == Some(5)).await;
    stop(tasks, shutdown).await;
    let out = backend.fetch("out", 0, 0, 100, Duration::ZERO).await.unwrap();
    let values: Vec<(u64, u64)> = out.iter().map(|r| codec::decode(&r.value).unwrap()).collect();
    assert_eq!(values, vec![(1, 2), (1, 6), (1, 10)], "7 failed permanently, the rest in order");
    let dead = backend.fetch(topics::DEAD_RECORDS.name(), 0, 0, 100, Duration::ZERO).await.unwrap();
    let errors: Vec<&str> = dead.iter().map(|r| r.headers.get("herald-error").unwrap()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("undecodable")));
    let seven = dead.iter().find(|r| r.headers.get("herald-error") == Some("seven is not allowed")).unwrap();
    assert_eq!(codec::decode::<(u64, u64)>(&seven.value).unwrap(), (1, 7), "dead letter keeps the original bytes");
    assert_eq!(handle.metrics.dead_records.load(Ordering::Relaxed), 2);
    assert_eq!(stage.failures_of_three.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lane_never_holds_up_another_and_is_held_durably() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    // Lane 99 comes first and waits a minute; lane 1's records are behind it in the partition.
    let mut records = vec![(99, 1), (99, 2), (99, 3), (99, 4), (99, 5)];
    records.extend((10..40).map(|v| (1, v)));
    produce(&backend, &records).await;
    let stage = Probe::new();
    let (tasks, shutdown, handle) = start(&backend, stage.clone());
    let seen = |s: &Probe, lane: u64| s.seen.lock().unwrap().iter().filter(|(l, _)| *l == lane).count();
    until("lane 1 done while lane 99 waits", || seen(&stage, 1) == 30).await;
    assert_eq!(seen(&stage, 99), 0);
    // The waiting lane went to the held store, so the committed offset moved past it.
    let b = backend.clone();
    until("committed past the held lane", || {
        futures::executor::block_on(b.committed("in", "t", 0)).unwrap() == Some(35)
    })
    .await;
    assert!(handle.metrics.held_records.load(Ordering::Relaxed) >= 5);
    stop(tasks, shutdown).await;

    // After a restart the held lane comes back from the store, in order, with its replacement.
    let stage = Probe::new();
    stage.release.store(true, Ordering::SeqCst);
    let (tasks, shutdown, _) = start(&backend, stage.clone());
    // The head was replaced (value + 1000) and waits until its due time: move it by hand.
    let held = backend.held();
    let head = held.peek("t", 0, Lane(99), 1).await.unwrap();
    assert_eq!(codec::decode::<(u64, u64)>(&head[0].value).unwrap(), (99, 1001), "the replacement is what is held");
    stop(tasks, shutdown).await;
    held.update("t", 0, Lane(99), HeldRecordDue::now(head[0].clone())).await.unwrap();
    let (tasks, shutdown, _) = start(&backend, stage.clone());
    until("lane 99 done", || seen(&stage, 99) == 5).await;
    let lane99: Vec<u64> = stage.seen.lock().unwrap().iter().filter(|(l, _)| *l == 99).map(|(_, v)| *v).collect();
    assert_eq!(lane99, vec![1001, 2, 3, 4, 5], "a lane keeps its order through the held store");
    until("held store empty", || futures::executor::block_on(held.lanes("t", 0)).unwrap().is_empty()).await;
    stop(tasks, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_waiting_briefly_is_set_aside_when_the_partition_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    // Lane 99 fills the partition's memory and keeps waiting 100 ms at a time (too briefly to
    // be set aside for its wait); lane 1 is behind it in the partition.
    let mut records: Vec<(u64, u64)> = (11..=20).map(|v| (99, v)).collect();
    records.extend((100..130).map(|v| (1, v)));
    produce(&backend, &records).await;
    let stage = Probe::waiting(100);
    let config = RunnerConfig { partition_records: 4, hold_after: Duration::from_secs(30), ..config() };
    let (tasks, shutdown, handle) = start_with(&backend, stage.clone(), config);
    let seen = |s: &Probe, lane: u64| s.seen.lock().unwrap().iter().filter(|(l, _)| *l == lane).count();
    until("lane 1 done while lane 99 waits", || seen(&stage, 1) == 30).await;
    assert!(handle.metrics.held_records.load(Ordering::Relaxed) >= 4, "lane 99 was set aside");
    stage.release.store(true, Ordering::SeqCst);
    until("lane 99 done", || seen(&stage, 99) == 10).await;
    let lane99: Vec<u64> = stage.seen.lock().unwrap().iter().filter(|(l, _)| *l == 99).map(|(_, v)| *v).collect();
    assert_eq!(lane99[0], 1011, "the head was handed back replaced");
    assert_eq!(lane99[2..], [13, 14, 15, 16, 17, 18, 19, 20], "in order: {lane99:?}");
    stop(tasks, shutdown).await;
}

/// Makes a held record due now.
struct HeldRecordDue;
impl HeldRecordDue {
    fn now(mut r: crate::held::HeldRecord) -> crate::held::HeldRecord {
        r.due_ms = schemas::now_ms();
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_partition_keeps_each_lane_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    let records: Vec<(u64, u64)> = (100..300).map(|v| (v % 3, v)).collect();
    produce(&backend, &records).await;
    let stage = Probe::new();
    let (tasks, shutdown, _) = start(&backend, stage.clone());
    until("everything processed", || stage.seen.lock().unwrap().len() == 200).await;
    stop(tasks, shutdown).await;
    let seen = stage.seen.lock().unwrap().clone();
    let mut by_lane: HashMap<u64, Vec<u64>> = HashMap::new();
    for (lane, v) in seen {
        by_lane.entry(lane).or_default().push(v);
    }
    for (lane, values) in by_lane {
        let expected: Vec<u64> = (100..300).filter(|v| v % 3 == lane).collect();
        assert_eq!(values, expected, "lane {lane} out of order or duplicated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_not_processed_before_it_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    let mut out = Emitter::new(backend.clone());
    let due = schemas::now_ms() + 300;
    out.emit_due(&IN, &(5, 1), due).unwrap();
    out.emit(&IN, &(6, 1)).unwrap();
    out.flush().await.unwrap();
    let stage = Probe::new();
    let (tasks, shutdown, _) = start(&backend, stage.clone());
    until("the due record", || stage.seen.lock().unwrap().len() == 2).await;
    assert!(schemas::now_ms() >= due);
    assert_eq!(stage.seen.lock().unwrap()[0], (6, 1), "the record not due waited; the other did not");
    stop(tasks, shutdown).await;
}

/// Records are `(lane, items)`; each step takes a few items of its record, emits them and hands
/// the rest back with a short or a long wait (past `hold_after`), so records move between memory
/// and the held store while new records keep arriving.
struct Splitter {
    steps: std::sync::atomic::AtomicU64,
}

const ITEMS: Topic<(u64, Vec<u64>)> = Topic::new("in", 1, None, |r| r.0);

impl Stage for Splitter {
    type In = (u64, Vec<u64>);
    fn name(&self) -> &'static str {
        "t"
    }
    fn lane(&self, input: &(u64, Vec<u64>)) -> Lane {
        Lane(input.0)
    }
    async fn process(
        &self,
        batch: Vec<Input<(u64, Vec<u64>)>>,
        out: &mut Emitter,
    ) -> std::result::Result<Step<(u64, Vec<u64>)>, StageError> {
        for (i, input) in batch.into_iter().enumerate() {
            let (lane, mut items) = input.value;
            let step = self.steps.fetch_add(1, Ordering::Relaxed);
            let take = ((step % 3) as usize + 1).min(items.len());
            let rest = items.split_off(take);
            for item in items {
                out.emit(&OUT, &(lane, item)).map_err(crate::stage::transient)?;
            }
            if !rest.is_empty() {
                let wait = if step.is_multiple_of(5) { 60 } else { 1 };
                return Ok(Step::Wait { from: i, replacement: Some((lane, rest)), until_ms: schemas::now_ms() + wait });
            }
        }
        Ok(Step::Done)
    }
}

/// Feeds `rounds` rounds of three records (seven items each) into `in`, crashing the runner
/// (its tasks aborted: no drain, nothing committed beyond what was) after `crash_after`.
async fn split_and_check(rounds: u64, crash_after: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    let config = RunnerConfig { hold_after: Duration::from_millis(30), max_batch: 1, ..config() };
    let start = |backend: &Arc<EmbeddedTopics>| {
        let shutdown = Shutdown::new();
        let mut tasks = JoinSet::new();
        let runtime = Runtime {
            backend: backend.clone(),
            held: backend.held(),
            shutdown: shutdown.clone(),
            board: Arc::default(),
            assignment: None,
        };
        spawn(&mut tasks, Arc::new(Splitter { steps: Default::default() }), ITEMS, &runtime, config.clone());
        (tasks, shutdown)
    };
    let (mut tasks, mut shutdown) = start(&backend);
    let mut expected = std::collections::BTreeSet::new();
    let mut next = 0u64;
    for round in 0..rounds {
        let mut out = Emitter::new(backend.clone());
        for lane in 0..3u64 {
            let items: Vec<u64> = (next..next + 7).collect();
            next += 7;
            expected.extend(items.iter().map(|i| (lane, *i)));
            out.emit(&ITEMS, &(lane, items)).unwrap();
        }
        out.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(round % 4 * 5)).await;
        if crash_after == Some(round) {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            (tasks, shutdown) = start(&backend);
        }
    }
    let b = backend.clone();
    let emitted = move || {
        let records = futures::executor::block_on(b.fetch("out", 0, 0, 100_000, Duration::ZERO)).unwrap();
        records
            .iter()
            .map(|r| codec::decode::<(u64, u64)>(&r.value).unwrap())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = emitted();
        if expected.is_subset(&seen) {
            break;
        }
        assert!(Instant::now() < deadline, "lost: {:?}", expected.difference(&seen).take(20).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(tasks, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_handed_back_in_parts_are_never_lost() {
    split_and_check(40, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_handed_back_in_parts_survive_a_crash() {
    split_and_check(40, Some(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_take_turns_in_the_order_their_records_arrived() {
    // Lane ids run against arrival order: serving lanes by id (not by their oldest record)
    // would run lane 1 first, and a lane that keeps getting records would starve the others.
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    produce(&backend, &[(5, 1), (4, 1), (3, 1), (2, 1), (1, 1)]).await;
    let stage = Probe::new();
    let (tasks, shutdown, _) =
        start_with(&backend, stage.clone(), RunnerConfig { max_batch: 1, concurrent_lanes: 1, ..config() });
    until("all seen", || stage.seen.lock().unwrap().len() == 5).await;
    stop(tasks, shutdown).await;
    assert_eq!(*stage.seen.lock().unwrap(), vec![(5, 1), (4, 1), (3, 1), (2, 1), (1, 1)]);
}

/// Lane 1's records from value 10 on block until `open`; records are `(lane, value)`.
struct Blocker {
    open: std::sync::atomic::AtomicBool,
    seen: Mutex<Vec<(u64, u64)>>,
}

impl Stage for Blocker {
    type In = (u64, u64);
    fn name(&self) -> &'static str {
        "t"
    }
    fn lane(&self, input: &(u64, u64)) -> Lane {
        Lane(input.0)
    }
    async fn process(
        &self,
        batch: Vec<Input<(u64, u64)>>,
        _out: &mut Emitter,
    ) -> std::result::Result<Step<(u64, u64)>, StageError> {
        for input in &batch {
            while input.value.0 == 1 && input.value.1 >= 10 && !self.open.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.seen.lock().unwrap().push(input.value);
        }
        Ok(Step::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lane_is_read_ahead_of_a_full_partition_and_nothing_is_done_twice() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    // Lane 1 is past its first steps and then stuck with the partition's memory full and 30
    // more records behind; a new lane's record comes after all of them.
    produce(&backend, &(0..50).map(|v| (1, v)).collect::<Vec<_>>()).await;
    let stage = Arc::new(Blocker { open: Default::default(), seen: Mutex::default() });
    let config = RunnerConfig { max_batch: 1, partition_records: 4, concurrent_lanes: 1, ..config() };
    let shutdown = Shutdown::new();
    let mut tasks = JoinSet::new();
    let runtime = Runtime {
        backend: backend.clone(),
        held: backend.held(),
        shutdown: shutdown.clone(),
        board: Arc::default(),
        assignment: None,
    };
    spawn(&mut tasks, stage.clone(), IN, &runtime, config);
    let seen = |lane: u64| stage.seen.lock().unwrap().iter().filter(|(l, _)| *l == lane).count();
    until("lane 1 stuck at 10", || seen(1) == 10).await;
    produce(&backend, &[(2, 0), (2, 1)]).await;
    until("the new lane done while lane 1 is stuck", || seen(2) == 2).await;
    assert_eq!(seen(1), 10);
    let b = backend.clone();
    let committed = move || futures::executor::block_on(b.committed("in", "t", 0)).unwrap();
    assert!(committed() <= Some(10), "never committed past records not fetched yet: {:?}", committed());
    stage.open.store(true, Ordering::SeqCst);
    until("all committed", || committed() == Some(52)).await;
    stop(tasks, shutdown).await;
    let seen = stage.seen.lock().unwrap().clone();
    let mut expected: Vec<(u64, u64)> = (0..50).map(|v| (1, v)).collect();
    expected.extend([(2, 0), (2, 1)]);
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "every record once: {seen:?}");
    let lane1: Vec<u64> = seen.iter().filter(|(l, _)| *l == 1).map(|(_, v)| *v).collect();
    assert_eq!(lane1, (0..50).collect::<Vec<_>>(), "lane 1 in order");
}
