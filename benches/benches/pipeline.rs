//! One 1,000-recipient chunk through all five stages on the embedded engine: trigger a
//! campaign of 1,000 recipients and wait until it is completed (receipts included), with an
//! instant simulator so the figure is Herald's own cost per chunk.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald::engine::{Engine, EngineConfig};
use herald::seed::{tenant_with_campaign, SeedSpec};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.simulator.latency = Duration::ZERO;
    config.simulator.jitter = Duration::ZERO;
    config.simulator.receipt_delay = Duration::ZERO;
    let engine = rt.block_on(Engine::start(config)).unwrap();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(20);
    g.bench_function("one_chunk_all_stages", |b| {
        b.iter_batched(
            || {
                let spec = SeedSpec { name: "b".into(), recipients: 1000, rate_limit_per_s: None, burst: 0, weight: 1 };
                rt.block_on(tenant_with_campaign(&engine, &spec)).unwrap()
            },
            |(t, c)| {
                rt.block_on(async {
                    engine.trigger(t, c).await.unwrap();
                    loop {
                        let counters = engine.store.get_counters(t, c).await.unwrap().unwrap_or_default();
                        if counters.completed_ms.is_some() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                })
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
    rt.block_on(engine.stop()).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
