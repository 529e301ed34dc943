//! Embedded store: a reconcile-sized batch of 1,000 message-log rows committed atomically, and
//! 256 send claims compare-and-set from absent to `InFlight` (the write in front of every group
//! of unpaced provider calls). Also the two ways reconcile finds a row a receipt applies to:
//! 1,000 rows read back from the store, against the same rows decoded from its recent-row cache
//! (encoded rows in a `Generations`, as `stages/src/reconcile.rs` keeps them).
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use schemas::*;
use std::sync::Arc;
use storage::*;

fn rows(start: u64) -> LogBatch {
    LogBatch {
        writes: (start..start + 1000)
            .map(|i| LogWrite {
                key: MessageKey {
                    tenant: TenantId(1),
                    campaign: CampaignId(1),
                    bucket: (i / BUCKET_SIZE) as u32,
                    id: MessageId::derive(TenantId(1), CampaignId(1), RecipientId(i), Channel::Sms),
                },
                record: MessageRecord {
                    recipient: RecipientId(i),
                    address: format!("+1555{i:07}"),
                    status: MessageStatus::Delivered,
                    attempts: 1,
                    provider_message_id: Some(format!("sim.{i}")),
                    error: None,
                    trigger_ms: 0,
                    history: vec![(MessageStatus::Sent, 1), (MessageStatus::Delivered, 2)],
                },
                index: None,
            })
            .collect(),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).unwrap());
    let state = EmbeddedState::new(store.clone());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1000));
    let mut next = 0u64;
    g.bench_function("message_log_apply_1000", |b| {
        b.iter_batched(
            || {
                next += 1000;
                rows(next)
            },
            |batch| rt.block_on(store.apply(batch)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // Rows as receipts find them: written once, then read back.
    let written: Vec<LogWrite> = (1..=8).flat_map(|k| rows(k * 1000).writes).collect();
    for k in 1..=8 {
        rt.block_on(store.apply(rows(k * 1000))).unwrap();
    }
    let keys: Vec<MessageKey> = written.iter().map(|w| w.key).collect();
    let mut cache = helpers::Generations::new(8_192);
    for w in &written {
        cache.put(w.key, codec::encode(&w.record).unwrap().into_boxed_slice());
    }
    let mut at = 0usize;
    let mut next_keys = || {
        at = (at + 1000) % keys.len();
        keys[at..at + 1000].to_vec()
    };
    g.bench_function("message_rows_read_1000", |b| {
        b.iter_batched(
            &mut next_keys,
            |keys| assert!(rt.block_on(store.get_messages(&keys)).unwrap().iter().all(Option::is_some)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("message_rows_from_cache_1000", |b| {
        b.iter_batched(
            &mut next_keys,
            |keys| {
                for key in &keys {
                    let bytes = cache.peek(key).expect("held");
                    std::hint::black_box(codec::decode::<MessageRecord>(bytes).unwrap());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(256));
    let mut n = 0u64;
    g.bench_function("claims_compare_and_set_256", |b| {
        b.iter_batched(
            || {
                n += 256;
                (n..n + 256)
                    .map(|i| {
                        let id = MessageId::derive(TenantId(2), CampaignId(1), RecipientId(i), Channel::Sms);
                        let key = MessageKey { tenant: TenantId(2), campaign: CampaignId(1), bucket: 0, id };
                        ClaimWrite { key, expected: None, claim: Claim::InFlight { attempt: 1, at_ms: i } }
                    })
                    .collect::<Vec<_>>()
            },
            |claims| assert!(rt.block_on(state.put_claims(&claims, None)).unwrap().iter().all(|ok| *ok)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
