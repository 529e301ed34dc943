//! Codec: bincode (Herald's topic codec) vs serde_json on a 500-message ready batch.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use schemas::*;

fn batch(n: u64) -> MessageBatch {
    MessageBatch {
        tenant: TenantId(1),
        campaign: CampaignId(1),
        messages: (0..n)
            .map(|i| RenderedMessage {
                key: MessageKey {
                    tenant: TenantId(1),
                    campaign: CampaignId(1),
                    bucket: 0,
                    id: MessageId::derive(TenantId(1), CampaignId(1), RecipientId(i), Channel::Sms),
                },
                recipient: RecipientId(i),
                address: format!("+1555{i:07}"),
                content: Content::Sms {
                    text: format!("Hi Member {i}, your Herald code is {:06}.", i * 7919 % 1_000_000),
                },
                trigger_ms: 1_700_000_000_000,
                attempt: 0,
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let b = batch(500);
    let mut g = c.benchmark_group("codec_500_messages");
    g.throughput(Throughput::Elements(500));
    g.bench_function("bincode_encode_decode", |bench| {
        bench.iter(|| {
            let bytes = codec::encode(&b).unwrap();
            codec::decode::<MessageBatch>(&bytes).unwrap()
        })
    });
    g.bench_function("json_encode_decode", |bench| {
        bench.iter(|| {
            let bytes = serde_json::to_vec(&b).unwrap();
            serde_json::from_slice::<MessageBatch>(&bytes).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
