//! The embedded store's floor: every store write of a delivered message and nothing else, at
//! scale, on the engine's own store configuration (the default 128 MiB memory budget).
//!
//! Per message, as the engine writes them (ARCHITECTURE.md, "Write path and memory budget"):
//! the `InFlight` claim (compare-and-set from absent, groups of 256 like deliver's unpaced
//! groups), the `Done` claim (compare-and-set from `InFlight`, settle waves of 256), the
//! accepted message row with its provider-id index entry, and the delivered row, each log
//! write in a reconcile-sized batch of 1,024 with its campaign's counters and timeline point.
//! Two writers run at once (this machine's 2 cores) on their own campaigns; the store grows
//! across iterations, so its flushes and compactions are part of the figure. What it measures
//! is the most messages per second the engine could deliver with these writes if nothing
//! else cost anything.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use schemas::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use storage::*;

/// Messages one writer handles per iteration.
const CHUNK: u64 = 1_024;
/// Claims per compare-and-set call.
const GROUP: usize = 256;
const WRITERS: u64 = 2;

fn key(campaign: u64, i: u64) -> MessageKey {
    let (tenant, campaign) = (TenantId(campaign), CampaignId(campaign));
    let id = MessageId::derive(tenant, campaign, RecipientId(i), Channel::Sms);
    MessageKey { tenant, campaign, bucket: (i / BUCKET_SIZE) as u32, id }
}

fn row(i: u64, status: MessageStatus) -> MessageRecord {
    let mut history = vec![(MessageStatus::Sent, 1)];
    if status == MessageStatus::Delivered {
        history.push((MessageStatus::Delivered, 2));
    }
    MessageRecord {
        recipient: RecipientId(i),
        address: format!("+1555{i:07}"),
        status,
        attempts: 1,
        provider_message_id: Some(format!("sim.{i}")),
        error: None,
        trigger_ms: 0,
        history,
    }
}

/// Time spent per write kind (ns): in-flight claims, done claims, accepted rows with their
/// index, delivered rows.
static SPENT: [AtomicU64; 4] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn spent(kind: usize, since: Instant) -> Instant {
    SPENT[kind].fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Instant::now()
}

/// Every store write of messages `from..from + CHUNK` of `campaign`.
async fn deliver_chunk(store: &EmbeddedStore, state: &EmbeddedState, campaign: u64, from: u64) {
    let mut t = Instant::now();
    let keys: Vec<MessageKey> = (from..from + CHUNK).map(|i| key(campaign, i)).collect();
    let in_flight = Claim::InFlight { attempt: 1, at_ms: 1 };
    for group in keys.chunks(GROUP) {
        let claims: Vec<ClaimWrite> =
            group.iter().map(|k| ClaimWrite { key: *k, expected: None, claim: in_flight.clone() }).collect();
        assert!(state.put_claims(&claims, None).await.unwrap().iter().all(|ok| *ok));
    }
    t = spent(0, t);
    for (n, group) in keys.chunks(GROUP).enumerate() {
        let claims: Vec<ClaimWrite> = group
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let outcome = OutcomeKind::Accepted {
                    provider: "simulator".into(),
                    provider_message_id: format!("sim.{}", from + (n * GROUP + j) as u64),
                };
                let done = Claim::Done { attempt: 1, outcome, letter: None, receipt: false };
                ClaimWrite { key: *k, expected: Some(in_flight.clone()), claim: done }
            })
            .collect();
        assert!(state.put_claims(&claims, None).await.unwrap().iter().all(|ok| *ok));
    }
    t = spent(1, t);
    for (kind, status) in [(2, MessageStatus::Sent), (3, MessageStatus::Delivered)] {
        let writes = keys
            .iter()
            .zip(from..)
            .map(|(k, i)| LogWrite {
                key: *k,
                record: row(i, status),
                index: (status == MessageStatus::Sent).then(|| ("simulator".to_string(), format!("sim.{i}"))),
            })
            .collect();
        let batch = LogBatch {
            writes,
            counters: vec![(TenantId(campaign), CampaignId(campaign), CampaignCounters::default())],
            at_ms: from,
            ..Default::default()
        };
        store.apply(batch).await.unwrap();
        t = spent(kind, t);
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let budget = herald::backend::DEFAULT_MEMORY_BUDGET_MIB << 20;
    let herald::backend::BackendChoice::Embedded { store: config, .. } =
        herald::backend::BackendChoice::embedded(budget)
    else {
        unreachable!("embedded() makes the embedded choice")
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), config).unwrap());
    let state = Arc::new(EmbeddedState::new(store.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(WRITERS as usize).build().unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("write_path");
    g.throughput(Throughput::Elements(CHUNK * WRITERS));
    g.bench_function("delivered_message_store_writes", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            rt.block_on(async {
                let writers: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let (store, state, next) = (store.clone(), state.clone(), next.clone());
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                let from = next.fetch_add(CHUNK, Ordering::Relaxed);
                                deliver_chunk(&store, &state, w + 1, from).await;
                            }
                        })
                    })
                    .collect();
                for w in writers {
                    w.await.unwrap();
                }
            });
            started.elapsed()
        })
    });
    g.finish();
    let spent: Vec<u64> = SPENT.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let total = spent.iter().sum::<u64>().max(1) as f64;
    let share = |i: usize| 100.0 * spent[i] as f64 / total;
    eprintln!(
        "write_path: {} messages; writer time: in-flight claims {:.0}%, done claims {:.0}%, accepted rows + index {:.0}%, delivered rows {:.0}%",
        next.load(Ordering::Relaxed),
        share(0),
        share(1),
        share(2),
        share(3)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
