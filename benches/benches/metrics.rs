//! The metrics exposition (`herald_api::metrics`, the `metrics` crate's Prometheus exporter):
//! what one HTTP request's recording costs, and one scrape of a board the size of a busy
//! process's (8 stages' runner counters and 64 senders' samples). Stages publish snapshots
//! about once a second, never per message, so neither is on a message's path.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pipeline::Sample;

fn bench(c: &mut Criterion) {
    let metrics = api::metrics::Metrics::default();
    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(1));
    group.bench_function("observe_one_request", |b| b.iter(|| metrics.observe(200, 0.0021)));
    for stage in 0..8 {
        let samples = (0..13)
            .map(|i| {
                Sample::counter(NAMES[i], "a runner counter", (stage * 1000 + i) as f64)
                    .label("stage", format!("s{stage}"))
            })
            .collect();
        metrics.board.publish(format!("s{stage}"), samples);
    }
    let senders = (0..64)
        .flat_map(|s| {
            let sample = |name, v| {
                Sample::gauge(name, "a sender sample", v)
                    .label("tenant", (s % 8).to_string())
                    .label("sender", format!("PN-{s}"))
            };
            [
                sample("herald_sender_rate_per_s", 80.0),
                sample("herald_sender_stopped", 0.0),
                sample("herald_sender_pace_signals_total", 3.0),
            ]
        })
        .collect();
    metrics.board.publish("deliver-senders", senders);
    group.bench_function("scrape_296_samples", |b| b.iter(|| metrics.render(Vec::new()).len()));
    group.finish();
}

const NAMES: [&str; 13] = [
    "a_total", "b_total", "c_total", "d_total", "e_total", "f_total", "g_total", "h_total", "i_total", "j_total",
    "k_total", "l_total", "m_total",
];

criterion_group!(benches, bench);
criterion_main!(benches);
