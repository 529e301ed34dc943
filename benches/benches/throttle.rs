//! Throttle decision: a token-bucket take, and an uncontended fair-gate acquire/release.
use criterion::{criterion_group, criterion_main, Criterion};
use schemas::helpers::TokenBucket;
use schemas::TenantId;
use stages::throttle::gate::{FairGate, Grant};
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let start = Instant::now();
    let mut bucket = TokenBucket::new(1_000_000_000.0, 1_000_000, start);
    let mut t = 0u64;
    c.bench_function("token_bucket_take", |b| {
        b.iter(|| {
            t += 1;
            bucket.take(1, start + Duration::from_nanos(t * 10)).is_ok()
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let gate = FairGate::new(1_000_000, 1_000_000);
    c.bench_function("fair_gate_acquire_release", |b| {
        b.iter(|| {
            let grant = rt.block_on(gate.acquire(TenantId(1), 1, 500, Duration::from_secs(1), false));
            assert_eq!(grant, Grant::Granted(500));
            gate.release(TenantId(1), 500);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
