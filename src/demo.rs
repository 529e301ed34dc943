//! `herald demo`: one campaign end to end on the embedded default, with a live progress bar.
//!
//! Resumable: run it again on the same `--data-dir` after a crash and it picks up the campaign
//! the previous run left running (this is what the SIGKILL test does).

use crate::engine::{Engine, EngineConfig};
use crate::seed::{tenant_with_campaign, SeedSpec};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use schemas::{CampaignId, TenantId};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use storage::{CampaignCounters, CampaignStatus};

#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub recipients: u64,
    pub data_dir: PathBuf,
    /// Messages per second for the demo tenant (0: unlimited).
    pub rate: u32,
    pub json: bool,
}

/// The demo's final summary (printed as JSON with `--json`).
#[derive(Debug, Serialize)]
pub struct DemoSummary {
    pub tenant: u64,
    pub campaign: u64,
    /// The campaign's counters (`total`, `sent`, `delivered`, ... as the store has them).
    #[serde(flatten)]
    pub counters: CampaignCounters,
    pub completed: bool,
    pub elapsed_s: f64,
    pub provider_calls_this_run: u64,
    pub calls_log: String,
}

/// Finds a campaign a previous run left running and unfinished.
async fn unfinished(engine: &Engine) -> anyhow::Result<Option<(TenantId, CampaignId)>> {
    for tenant in engine.store.list_tenants().await? {
        for c in engine.store.list_campaigns(tenant.id).await? {
            let done = engine.store.get_counters(tenant.id, c.id).await?.and_then(|c| c.completed_ms).is_some();
            if c.status == CampaignStatus::Running && !done {
                return Ok(Some((tenant.id, c.id)));
            }
        }
    }
    Ok(None)
}

/// Polls a campaign's counters until it completes (or `shutdown` fires), calling `tick`.
pub async fn wait_until_complete(
    engine: &Engine,
    campaigns: &[(TenantId, CampaignId)],
    mut tick: impl FnMut(&[CampaignCounters]),
) -> anyhow::Result<Vec<CampaignCounters>> {
    let shutdown = engine.shutdown_handle();
    loop {
        let mut all = Vec::with_capacity(campaigns.len());
        for (t, c) in campaigns {
            all.push(engine.store.get_counters(*t, *c).await?.unwrap_or_default());
        }
        tick(&all);
        if all.iter().all(|c| c.completed_ms.is_some()) || shutdown.is_triggered() {
            return Ok(all);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.wait() => {}
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<DemoSummary> {
    let mut config = EngineConfig::new(&args.data_dir);
    let calls_log = args.data_dir.join("provider-calls.jsonl");
    config.simulator.calls_log = Some(calls_log.clone());
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let engine = Engine::start(config).await?;
    let calls_before = engine.simulator.ledger().calls;

    let (tenant, campaign, audience_size) = match unfinished(&engine).await? {
        Some((t, c)) => {
            let campaign = engine.store.get_campaign(t, c).await?.context("campaign vanished")?;
            let total = engine.store.get_audience(t, campaign.audience).await?.map(|a| a.recipient_count).unwrap_or(0);
            if !args.json {
                eprintln!("Resuming campaign {c} of tenant {t} left running by a previous run.");
            }
            (t, c, total)
        }
        None => {
            let spec = SeedSpec {
                name: "demo".into(),
                recipients: args.recipients,
                rate_limit_per_s: (args.rate > 0).then_some(args.rate),
                burst: (args.rate / 10).max(1),
                weight: 1,
            };
            if !args.json {
                eprintln!("Creating an audience of {} synthetic recipients...", args.recipients);
            }
            let (t, c) = tenant_with_campaign(&engine, &spec).await?;
            engine.trigger(t, c).await?;
            (t, c, args.recipients)
        }
    };

    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(audience_size) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} terminal ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let signal = engine.shutdown_handle();
    tokio::spawn(async move {
        crate::wait_for_signal().await;
        signal.trigger();
    });
    let counters = wait_until_complete(&engine, &[(tenant, campaign)], |all| {
        let c = &all[0];
        bar.set_position(c.terminal());
        bar.set_message(format!(
            "sent {} delivered {} failed {}",
            c.sent,
            c.delivered + c.read,
            c.failed + c.dead_lettered
        ));
    })
    .await?
    .remove(0);
    bar.finish_and_clear();
    let elapsed_s = started.elapsed().as_secs_f64();
    let provider_calls_this_run = engine.simulator.ledger().calls - calls_before;
    engine.stop().await?;

    Ok(DemoSummary {
        tenant: tenant.0,
        campaign: campaign.0,
        completed: counters.completed_ms.is_some(),
        counters: CampaignCounters { total: counters.total.or(Some(audience_size)), ..counters },
        elapsed_s,
        provider_calls_this_run,
        calls_log: calls_log.display().to_string(),
    })
}
