//! Conformance kits: what every topic backend and every held store must do, as test
//! functions a backend's own tests call (the embedded backend here, Fluvio and the CQL store in
//! theirs). They assert the contract of [`crate::topic::TopicBackend`] and
//! [`crate::held::HeldRecords`], not an implementation.
//!
//! The kit's topics: `kit.a` (2 partitions, capacity 2, consumer group `kit`) and `kit.b`
//! (1 partition, unbounded, no consumer); create them with [`specs`] and [`consumers`].

use crate::held::{HeldRecord, HeldRecords};
use crate::stage::Lane;
use crate::topic::{ProducerRecord, TopicBackend, TopicSpec};
use schemas::envelope::Headers;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The topics the topic kit uses.
pub fn specs() -> Vec<TopicSpec> {
    vec![TopicSpec::new("kit.a", 2, Some(2)), TopicSpec::new("kit.b", 1, None)]
}

/// `(topic, consumer group)` of the kit's topics.
pub fn consumers() -> Vec<(&'static str, &'static str)> {
    vec![("kit.a", "kit")]
}

fn record(topic: &'static str, partition: u32, key: u64, value: u8) -> ProducerRecord {
    let mut headers = Headers::new();
    headers.set("traceparent", format!("00-{value}"));
    ProducerRecord { topic, partition, key, headers, value: vec![value] }
}

/// The topic backend contract (see `crate::topic`). `backend` must have [`specs`] created and
/// empty.
pub async fn topic_backend(backend: &Arc<dyn TopicBackend>) {
    // Herald picks partitions; offsets are dense per partition; one call may span topics.
    let offsets = backend
        .produce(vec![
            record("kit.a", 0, 10, 1),
            record("kit.a", 1, 11, 2),
            record("kit.a", 0, 12, 3),
            record("kit.b", 0, 13, 4),
        ])
        .await
        .unwrap();
    assert_eq!(offsets, vec![0, 0, 1, 0]);
    assert_eq!(backend.end_offset("kit.a", 0).await.unwrap(), 2);
    let got = backend.fetch("kit.a", 0, 0, 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|r| (r.offset, r.key, r.value[0])).collect::<Vec<_>>(), vec![(0, 10, 1), (1, 12, 3)]);
    assert_eq!(got[1].headers.get("traceparent"), Some("00-3"), "headers travel with the record");
    assert_eq!(backend.fetch("kit.a", 0, 1, 10, Duration::ZERO).await.unwrap().len(), 1, "fetch starts at `from`");
    assert_eq!(backend.fetch("kit.a", 0, 0, 1, Duration::ZERO).await.unwrap().len(), 1, "fetch honours max_records");

    // Producing never waits for room, even past a bounded topic's capacity with no consumer.
    let started = Instant::now();
    let many: Vec<_> = (0..10).map(|i| record("kit.a", 1, i, i as u8)).collect();
    assert_eq!(backend.produce(many).await.unwrap(), (1..11).collect::<Vec<_>>());
    assert!(started.elapsed() < Duration::from_secs(2), "produce waited for room");

    // Committed offsets: none until a commit; reading never registers the group.
    assert_eq!(backend.committed("kit.a", "kit", 0).await.unwrap(), None);
    assert_eq!(backend.committed("kit.a", "nobody", 0).await.unwrap(), None);
    backend.commit("kit.a", "kit", 0, 1).await.unwrap();
    assert_eq!(backend.committed("kit.a", "kit", 0).await.unwrap(), Some(1));
    assert_eq!(backend.committed("kit.a", "kit", 1).await.unwrap(), None, "per partition");
    // Retention may drop what the consumer passed, never what it did not.
    let start = backend.start_offset("kit.a", 0).await.unwrap();
    assert!(start <= 1, "start {start} past the committed offset");
    let rest = backend.fetch("kit.a", 0, 1, 10, Duration::ZERO).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![1]);

    // A fetch at the end waits for the next record.
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.fetch("kit.b", 0, 1, 10, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    backend.produce(vec![record("kit.b", 0, 1, 9)]).await.unwrap();
    let woke =
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("fetch did not wake").unwrap().unwrap();
    assert_eq!(woke.iter().map(|r| (r.offset, r.value[0])).collect::<Vec<_>>(), vec![(1, 9)]);
    // An idle fetch returns empty after its wait.
    assert!(backend.fetch("kit.b", 0, 2, 10, Duration::from_millis(20)).await.unwrap().is_empty());

    // Unknown topics and partitions are errors retrying cannot fix.
    let e = backend.produce(vec![record("kit.none", 0, 0, 0)]).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(backend.produce(vec![record("kit.b", 7, 0, 0)]).await.is_err());
    assert!(backend.spec("kit.none").is_err());
    assert_eq!(backend.spec("kit.a").unwrap().capacity, Some(2));
}

fn held(seq: u64, due_ms: u64, value: u8) -> HeldRecord {
    HeldRecord { seq, due_ms, key: u64::from(value), headers: Headers::default(), value: vec![value] }
}

/// The held store contract (see `crate::held`). `store` must be empty.
pub async fn held_store(store: &dyn HeldRecords) {
    let (a, b) = (Lane(1), Lane(2));
    store.hold("g", 0, a, vec![held(10, 5, 1), held(11, 6, 2)]).await.unwrap();
    store.hold("g", 0, a, vec![held(12, 7, 3)]).await.unwrap();
    // A lane can grow at its front too (records set aside while waiting).
    store.hold("g", 0, a, vec![held(8, 1, 7), held(9, 2, 8)]).await.unwrap();
    store.hold("g", 0, b, vec![held(1, 1, 9)]).await.unwrap();
    store.hold("g", 1, a, vec![held(1, 1, 9)]).await.unwrap();
    store.hold("other", 0, a, vec![held(1, 1, 9)]).await.unwrap();
    let seqs = |v: Vec<HeldRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.peek("g", 0, a, 10).await.unwrap()), vec![8, 9, 10, 11, 12], "in seq order");
    assert_eq!(seqs(store.peek("g", 0, a, 2).await.unwrap()), vec![8, 9]);
    // Holding a seq again replaces it (a retried write counts once).
    store.hold("g", 0, a, vec![held(12, 7, 3)]).await.unwrap();
    let mut lanes = store.lanes("g", 0).await.unwrap();
    lanes.sort_by_key(|l| l.lane);
    assert_eq!(lanes.len(), 2);
    assert_eq!((lanes[0].lane, lanes[0].count, lanes[0].last_seq, lanes[0].first_due_ms), (a, 5, 12, 1));
    assert_eq!((lanes[1].lane, lanes[1].count), (b, 1));

    // Update replaces one record in place; release removes a prefix.
    store.update("g", 0, a, HeldRecord { value: vec![70], ..held(8, 100, 7) }).await.unwrap();
    let first = store.peek("g", 0, a, 1).await.unwrap();
    assert_eq!((first[0].due_ms, first[0].value.clone()), (100, vec![70]));
    store.release("g", 0, a, 10).await.unwrap();
    assert_eq!(seqs(store.peek("g", 0, a, 10).await.unwrap()), vec![11, 12]);
    let lane_a = store.lanes("g", 0).await.unwrap().into_iter().find(|l| l.lane == a).unwrap();
    assert_eq!((lane_a.count, lane_a.first_due_ms), (2, 6));
    store.release("g", 0, a, 12).await.unwrap();
    assert!(store.peek("g", 0, a, 10).await.unwrap().is_empty());
    assert!(store.lanes("g", 0).await.unwrap().iter().all(|l| l.lane != a), "an empty lane is gone");
    // Other groups, partitions and lanes are untouched.
    assert_eq!(store.peek("g", 1, a, 10).await.unwrap().len(), 1);
    assert_eq!(store.peek("other", 0, a, 10).await.unwrap().len(), 1);
    assert_eq!(store.peek("g", 0, b, 10).await.unwrap().len(), 1);

    // The runner holds and releases one lane concurrently (a paced lane appending while its
    // front is worked off): the lane's summary stays exact, so whoever takes the partition
    // over finds every record.
    let c = Lane(3);
    store.hold("g", 2, c, (100..140).map(|s| held(s, 1, 1)).collect()).await.unwrap();
    let holds = (0..10u64).map(|i| store.hold("g", 2, c, (140 + i * 4..144 + i * 4).map(|s| held(s, 1, 1)).collect()));
    let releases = (0..10u64).map(|i| store.release("g", 2, c, 100 + i));
    let (held_all, released_all) =
        futures::future::join(futures::future::join_all(holds), futures::future::join_all(releases)).await;
    assert!(held_all.iter().chain(&released_all).all(|r| r.is_ok()));
    assert_eq!(seqs(store.peek("g", 2, c, 1_000).await.unwrap()), (110..180).collect::<Vec<_>>());
    let lane_c = store.lanes("g", 2).await.unwrap();
    assert_eq!(lane_c.iter().map(|l| (l.lane, l.count, l.last_seq)).collect::<Vec<_>>(), vec![(c, 70, 179)]);
}
