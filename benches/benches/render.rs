//! Render: one recipient through a compiled SMS template, and a whole 1,000-recipient chunk.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use schemas::*;
use stages::render::CompiledTemplate;

fn bench(c: &mut Criterion) {
    let template = storage::Template {
        id: TemplateId(1),
        tenant: TenantId(1),
        name: "t".into(),
        channel: Channel::Sms,
        body: Some("Hi {{ name }}, your Herald code is {{ code }}. Reply STOP to opt out.".into()),
        subject: None,
        html: None,
        whatsapp: None,
    };
    let compiled = CompiledTemplate::compile(&template).unwrap();
    let recipients: Vec<Recipient> = (0..1000u64)
        .map(|i| Recipient {
            id: RecipientId(i),
            bucket: 0,
            address: format!("+1555{i:07}"),
            attrs: vec![("name".into(), format!("Member {i}")), ("code".into(), format!("{i:06}"))],
        })
        .collect();
    c.bench_function("render_one_sms", |b| b.iter(|| compiled.render(&recipients[7]).unwrap()));
    let mut g = c.benchmark_group("render_chunk");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000_recipients_with_ids", |b| {
        b.iter(|| {
            let rendered: Vec<_> = recipients
                .iter()
                .map(|r| {
                    (MessageId::derive(TenantId(1), CampaignId(1), r.id, Channel::Sms), compiled.render(r).unwrap())
                })
                .collect();
            std::hint::black_box(rendered)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
