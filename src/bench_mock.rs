//! `herald bench --provider mock-http`: the whole pipeline against `herald mock-provider` over
//! real HTTP. Herald runs as `herald serve` does (API included, so the mock's signed status
//! webhooks arrive at `/webhooks/whatsapp`); each tenant gets a WhatsApp provider with one
//! sender (phone number id) paced at its rate; campaigns use a WhatsApp template. Figures come
//! from the mock's calls log (what the provider saw) and from the message log.

use crate::bench::{jain, stage_reports, terminal_rows, BenchArgs, BenchReport, TenantReport};
use crate::config::HeraldConfig;
use crate::demo::wait_until_complete;
use crate::engine::Engine;
use crate::mock_provider::{calls, MockArgs, MockProvider};
use crate::seed::{tenant_with_campaign, SeedSpec};
use crate::serve::Server;
use anyhow::Context;
use schemas::*;
use std::collections::BTreeMap;
use std::time::Instant;
use storage::secrets::aad;
use storage::*;

const APP_SECRET: &str = "bench-app-secret";

/// Points a seeded campaign at a WhatsApp template and gives its tenant a WhatsApp provider.
async fn make_whatsapp(
    engine: &Engine,
    key: &secrets::SecretKey,
    tenant: TenantId,
    campaign: CampaignId,
    base_url: &str,
    sender: SenderSettings,
) -> anyhow::Result<()> {
    let store = engine.store.as_ref();
    let template = TemplateId(engine.state.next_id("template").await?);
    store
        .put_template(&Template {
            id: template,
            tenant,
            name: "bench_whatsapp".into(),
            channel: Channel::WhatsApp,
            body: None,
            subject: None,
            html: None,
            whatsapp: Some(WhatsAppTemplate {
                template_name: "order_update_v1".into(),
                language: "en_US".into(),
                components: vec![WhatsAppComponent {
                    kind: "body".into(),
                    parameters: vec!["{{ name }}".into(), "{{ code }}".into()],
                }],
            }),
        })
        .await?;
    let mut c = store.get_campaign(tenant, campaign).await?.context("seeded campaign")?;
    c.template = template;
    store.put_campaign(&c).await?;
    let secrets = BTreeMap::from([
        ("access_token".to_string(), "bench-token".to_string()),
        ("app_secret".to_string(), APP_SECRET.to_string()),
        ("verify_token".to_string(), "bench-verify".to_string()),
    ]);
    let config = ProviderConfig {
        tenant,
        settings: ProviderSettings::WhatsApp {
            base_url: base_url.to_string(),
            api_version: "v21.0".into(),
            senders: vec![sender],
            daily_unique_limit: None,
        },
        secrets: key.seal(&aad(tenant, "whatsapp"), &secrets),
        updated_ms: now_ms(),
        verify_token_index: None,
    };
    store.put_provider(&config).await?;
    Ok(())
}

pub async fn run(args: BenchArgs, mock_mps: u32) -> anyhow::Result<BenchReport> {
    let tmp = tempfile::tempdir()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&data_dir)?;
    // The mock provider runs on this host: its loopback address must be reachable.
    let config = HeraldConfig {
        listen: "127.0.0.1:0".into(),
        metrics_listen: "off".into(),
        data_dir: data_dir.clone(),
        allow_private_provider_addresses: true,
        ..HeraldConfig::default()
    };
    let server = Server::start(&config).await?;
    let calls_log = data_dir.join("mock-calls.jsonl");
    let mock = MockProvider::start(MockArgs {
        webhook_url: format!("http://{}/webhooks/whatsapp", server.addr),
        app_secret: APP_SECRET.into(),
        mps: mock_mps,
        latency_ms: args.provider_latency_ms,
        failure_rate: args.failure_rate,
        calls_log: Some(calls_log.clone()),
        ..MockArgs::default()
    })
    .await?;
    let base_url = format!("http://{}", mock.addr);
    let key = config.secrets()?;
    let rate = args.rate_per_tenant.unwrap_or(mock_mps);
    let burst = (rate / 10).max(1);

    let setup = Instant::now();
    let tenants = args.tenants.max(1);
    let mut campaigns = Vec::new();
    {
        let engine = server.engine.lock().await;
        let engine = engine.as_ref().context("engine running")?;
        for i in 0..tenants {
            let share =
                args.recipients / u64::from(tenants) + u64::from(u64::from(i) < args.recipients % u64::from(tenants));
            let spec =
                SeedSpec { name: format!("bench-{i}"), recipients: share, rate_limit_per_s: None, burst: 0, weight: 1 };
            let (t, c) = tenant_with_campaign(engine, &spec).await?;
            let sender = SenderSettings { id: format!("bench-pn-{i}"), rate_limit_per_s: Some(rate), burst };
            make_whatsapp(engine, &key, t, c, &base_url, sender).await?;
            campaigns.push(((t, c), share));
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let started = Instant::now();
    let started_ms = now_ms();
    let (counters, lost, board) = {
        let engine = server.engine.lock().await;
        let engine = engine.as_ref().context("engine running")?;
        for ((t, c), _) in &campaigns {
            engine.trigger(*t, *c).await?;
        }
        let ids: Vec<_> = campaigns.iter().map(|(id, _)| *id).collect();
        let counters = wait_until_complete(engine, &ids, |_| {}).await?;
        let mut lost = 0;
        for ((t, c), share) in &campaigns {
            lost += share.saturating_sub(terminal_rows(engine, *t, *c).await?);
        }
        (counters, lost, engine.board.clone())
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    let summary = calls::analyze(&calls_log, started_ms)?;
    mock.stop();
    server.stop().await?;

    let per_tenant: Vec<TenantReport> = (0..tenants)
        .zip(&campaigns)
        .map(|(i, ((t, _), _))| {
            let s = summary.per_sender.get(&format!("bench-pn-{i}")).cloned().unwrap_or_default();
            TenantReport {
                tenant: t.0,
                rate_limit: Some(rate),
                achieved_rate: s.mean_rate,
                max_1s_window: s.max_1s_window,
                accepts: s.accepted,
                first_call_s: None,
                last_call_s: None,
            }
        })
        .collect();
    let terminal: u64 = counters.iter().map(|c| c.terminal()).sum();
    let shares: Vec<f64> = per_tenant.iter().map(|t| t.achieved_rate / f64::from(rate)).collect();
    Ok(BenchReport {
        backend: "embedded",
        workers: 1,
        recipients: args.recipients,
        tenants,
        elapsed_s,
        setup_s,
        throughput_msgs_per_s: terminal as f64 / elapsed_s.max(1e-9),
        provider_calls: summary.calls,
        provider_accepts: summary.accepted,
        duplicate_accepts: summary.duplicate_message_ids,
        lost,
        delivered: counters.iter().map(|c| c.delivered + c.read).sum(),
        failed: counters.iter().map(|c| c.failed).sum(),
        dead_lettered: counters.iter().map(|c| c.dead_lettered).sum(),
        p50_ms: None,
        p99_ms: None,
        peak_rss_bytes: crate::peak_rss_bytes(),
        worker_peak_rss_bytes: Vec::new(),
        // The in-process mock provider writes its own call log: the figures would mix it in.
        writes_per_message: None,
        bytes_written_per_message: None,
        os_bytes_written_per_message: None,
        row_reads_per_message: None,
        fairness_jain: jain(&shares),
        burst_per_tenant: burst,
        stages: stage_reports(&board),
        lag: Vec::new(),
        per_tenant,
        // Probes need the in-process simulator's ledger of first calls per tenant.
        probes: None,
    })
}
