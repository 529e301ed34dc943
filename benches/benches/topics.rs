//! Embedded topics: producing 64 batch records (2 KiB each, one partition's share of a step)
//! into a segment and fetching them back, and the held store setting aside then releasing 64
//! records of a lane (the throttle's path for a paced or paused campaign).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pipeline::topic::{ProducerRecord, TopicBackend, TopicSpec};
use pipeline::EmbeddedTopics;
use pipeline::{HeldRecord, HeldRecords, Lane};
use schemas::envelope::Headers;
use std::time::Duration;

const T: TopicSpec = TopicSpec::new("bench", 1, None);
const RECORDS: u64 = 64;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let topics = EmbeddedTopics::open_with_consumers(dir.path(), &[T], &[("bench", "g")], Default::default()).unwrap();
    let held = topics.held();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let value = vec![7u8; 2048];
    let mut g = c.benchmark_group("topics");
    g.throughput(Throughput::Elements(RECORDS));
    let mut next = 0u64;
    g.bench_function("produce_fetch_commit_64x2KiB", |b| {
        b.iter(|| {
            let records = (0..RECORDS)
                .map(|k| ProducerRecord {
                    topic: "bench",
                    partition: 0,
                    key: k,
                    headers: Headers::default(),
                    value: value.clone(),
                })
                .collect();
            rt.block_on(async {
                topics.produce(records).await.unwrap();
                let got = topics.fetch("bench", 0, next, RECORDS as usize, Duration::ZERO).await.unwrap();
                assert_eq!(got.len() as u64, RECORDS);
                next += RECORDS;
                topics.commit("bench", "g", 0, next).await.unwrap();
            })
        })
    });
    let mut seq = 0u64;
    g.bench_function("held_hold_release_64x2KiB", |b| {
        b.iter(|| {
            let records: Vec<HeldRecord> = (0..RECORDS)
                .map(|i| HeldRecord {
                    seq: seq + i,
                    due_ms: 0,
                    key: i,
                    headers: Headers::default(),
                    value: value.clone(),
                })
                .collect();
            seq += RECORDS;
            rt.block_on(async {
                held.hold("g", 0, Lane(1), records).await.unwrap();
                held.release("g", 0, Lane(1), seq - 1).await.unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
