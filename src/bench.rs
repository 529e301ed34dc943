//! `herald bench`: the SRE load generator. Seeds `--tenants` tenants sharing `--recipients`,
//! triggers all campaigns at once, runs the whole pipeline against the simulator and reports
//! what the *provider* saw (its ledger is independent of Herald's own state): throughput,
//! accept latency from trigger, duplicates, per-tenant rate accuracy and fairness, plus what
//! the message log says (lost = recipients without a terminal message).

use crate::demo::wait_until_complete;
use crate::engine::{Engine, EngineConfig};
use crate::seed::{tenant_with_campaign, SeedSpec};
use anyhow::Context;
use schemas::{CampaignId, TenantId};
use serde::Serialize;
use stages::deliver::simulator::Ledger;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub recipients: u64,
    pub tenants: u32,
    pub rate_per_tenant: Option<u32>,
    pub provider_latency_ms: u64,
    pub failure_rate: f64,
    pub data_dir: Option<PathBuf>,
    /// The embedded databases' memory budget, MiB (`BackendChoice::embedded`).
    pub memory_budget_mib: u64,
    /// Small probe campaigns sent one per second during the run (`crate::bench_probe`).
    pub probes: u32,
    /// Where to write the HTML report with charts (`crate::bench_html`).
    pub report: Option<PathBuf>,
    /// `Some(mps)`: run against `herald mock-provider` over HTTP (see `bench_mock`).
    pub mock_http: Option<u32>,
    /// `Some`: through the distributed backends of this configuration, with the stages in
    /// `workers` separate `herald worker` processes (see `bench_distributed`).
    pub distributed: Option<crate::bench_distributed::DistributedBench>,
}

#[derive(Debug, Serialize)]
pub struct TenantReport {
    pub tenant: u64,
    pub rate_limit: Option<u32>,
    pub achieved_rate: f64,
    pub max_1s_window: u64,
    pub accepts: u64,
    /// Seconds from the trigger to this tenant's first and last call (simulator runs only).
    pub first_call_s: Option<f64>,
    pub last_call_s: Option<f64>,
}

/// What one stage's runner did during the run (from the metrics board).
#[derive(Debug, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub records_in: u64,
    pub steps: u64,
    /// Records set aside in the held store (waiting lanes, memory pressure).
    pub held_records: u64,
    /// Time spent in steps, summed over concurrent steps (includes waiting on providers).
    pub busy_s: f64,
}

/// The per-stage figures the runners published.
pub(crate) fn stage_reports(board: &pipeline::Board) -> Vec<StageReport> {
    let value = |name: &str, stage: &str| board.value(name, &[("stage", stage)]).unwrap_or(0.0);
    pipeline::topics::STAGES
        .iter()
        .map(|s| StageReport {
            stage: s.name,
            records_in: value("herald_stage_records_in_total", s.name) as u64,
            steps: value("herald_stage_batches_total", s.name) as u64,
            held_records: value("herald_stage_held_records_total", s.name) as u64,
            busy_s: value("herald_stage_busy_microseconds_total", s.name) / 1e6,
        })
        .collect()
}

/// The most records a stage's group was behind its input topic (summed over partitions),
/// sampled every second of a distributed run.
#[derive(Debug, Serialize)]
pub struct StageLag {
    pub stage: &'static str,
    pub max_lag: u64,
    pub final_lag: u64,
    /// Records its input topic received per partition during the run: how the keys spread
    /// the work over partitions (and so over workers).
    pub records_per_partition: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// `embedded` or `distributed`.
    pub backend: &'static str,
    /// Processes running the stages.
    pub workers: u32,
    pub recipients: u64,
    pub tenants: u32,
    pub elapsed_s: f64,
    pub setup_s: f64,
    pub throughput_msgs_per_s: f64,
    pub provider_calls: u64,
    pub provider_accepts: u64,
    pub duplicate_accepts: u64,
    pub lost: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    /// Send trigger → provider accepted (simulator only; None over HTTP).
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub peak_rss_bytes: u64,
    /// Each worker process's peak RSS (distributed runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub worker_peak_rss_bytes: Vec<u64>,
    /// Rows written per message reaching a terminal state: keys put or removed in the embedded
    /// store's and topics' write batches, plus topic records appended (embedded runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_per_message: Option<f64>,
    /// The logical bytes of those rows and records per message (embedded runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_written_per_message: Option<f64>,
    /// Bytes this process handed to `write` calls per message, journal, flushes and compaction
    /// included (`wchar` of `/proc/self/io`; embedded runs on Linux only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_bytes_written_per_message: Option<f64>,
    /// Message rows reconcile read from the store per message: the rows its recent-row cache
    /// did not hold (embedded runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_reads_per_message: Option<f64>,
    pub fairness_jain: f64,
    pub burst_per_tenant: u32,
    pub stages: Vec<StageReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lag: Vec<StageLag>,
    pub per_tenant: Vec<TenantReport>,
    /// What the `--probes` campaigns waited (None without probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<crate::bench_probe::ProbeReport>,
}

/// Jain's fairness index over `xs` (1.0 = perfectly even).
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        1.0
    } else {
        sum * sum / (xs.len() as f64 * squares)
    }
}

/// Counts a campaign's messages in a terminal status by scanning its log in pages.
pub(crate) async fn terminal_rows(engine: &Engine, tenant: TenantId, campaign: CampaignId) -> anyhow::Result<u64> {
    let mut after = None;
    let mut terminal = 0;
    loop {
        let page = engine.store.scan_messages(tenant, campaign, after, 10_000).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some((last.bucket, last.id));
        terminal += page.iter().filter(|(_, r)| r.status.is_terminal()).count() as u64;
    }
    Ok(terminal)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    if let Some(mps) = args.mock_http {
        return crate::bench_mock::run(args, mps).await;
    }
    if args.distributed.is_some() {
        return crate::bench_distributed::run(args).await;
    }
    let tmp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut config = EngineConfig::new(&data_dir);
    config.backend = crate::backend::BackendChoice::embedded(args.memory_budget_mib << 20);
    config.simulator.latency = Duration::from_millis(args.provider_latency_ms);
    config.simulator.jitter = Duration::from_millis(args.provider_latency_ms / 2);
    config.simulator.transient_failure_rate = args.failure_rate;
    let setup = Instant::now();
    let engine = Engine::start(config).await?;
    let (campaigns, burst) = seed(&engine, &args).await?;
    let probes = crate::bench_probe::seed(&engine, args.probes).await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let sampler = args.report.is_some().then(|| crate::bench_html::Sampler::start(&engine));
    let run = run_campaigns(&engine, campaigns, &probes, setup_s, burst).await?;
    let timeline = match sampler {
        Some(sampler) => Some(sampler.finish(&engine).await),
        None => None,
    };
    let board = engine.board.clone();
    let report = report(&args, &run, &engine.simulator.ledger(), Vec::new());
    engine.stop().await?;
    let row_reads = board.value("herald_reconcile_row_reads_total", &[]);
    let row_reads_per_message =
        row_reads.map(|r| r / run.counters.iter().map(|c| c.terminal()).sum::<u64>().max(1) as f64);
    let report = BenchReport { stages: stage_reports(&board), row_reads_per_message, ..report };
    if let (Some(path), Some(timeline)) = (&args.report, timeline) {
        std::fs::write(path, crate::bench_html::render(&report, &timeline))
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    Ok(report)
}

/// One tenant and campaign per `--tenants`, the recipients shared out; returns them with
/// their audience sizes and the burst each sender was given.
pub(crate) async fn seed(
    engine: &Engine,
    args: &BenchArgs,
) -> anyhow::Result<(Vec<((TenantId, CampaignId), u64)>, u32)> {
    let burst = args.rate_per_tenant.map(|r| (r / 10).max(1)).unwrap_or(0);
    let tenants = args.tenants.max(1);
    let mut campaigns = Vec::new();
    for i in 0..tenants {
        let share =
            args.recipients / u64::from(tenants) + u64::from(u64::from(i) < args.recipients % u64::from(tenants));
        let spec = SeedSpec {
            name: format!("bench-{i}"),
            recipients: share,
            rate_limit_per_s: args.rate_per_tenant,
            burst,
            weight: 1,
        };
        campaigns.push((tenant_with_campaign(engine, &spec).await?, share));
    }
    Ok((campaigns, burst))
}

/// Sends every campaign at once, and the probes one per second meanwhile; waits until all
/// completed (a signal ends the wait early) and counts the recipients the log has no terminal
/// message for.
pub(crate) async fn run_campaigns(
    engine: &Engine,
    campaigns: Vec<((TenantId, CampaignId), u64)>,
    probes: &[(TenantId, CampaignId)],
    setup_s: f64,
    burst: u32,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let started_ms = schemas::now_ms();
    let (tally, os_bytes) = (pipeline::embedded::tally(), os_bytes_written());
    // Every campaign is sent at once (as many clients would), not one after another: a
    // campaign sent 0.4 s before the thousandth would otherwise run alone for a while.
    futures::future::try_join_all(campaigns.iter().map(|((t, c), _)| engine.trigger(*t, *c))).await?;
    let signal = engine.shutdown_handle();
    tokio::spawn(async move {
        crate::wait_for_signal().await;
        signal.trigger();
    });
    let ids: Vec<_> = campaigns.iter().map(|(id, _)| *id).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let main = async {
        let counters = wait_until_complete(engine, &ids, |_| {}).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (counters, started.elapsed().as_secs_f64())
    };
    let ((counters, elapsed_s), sent) = tokio::join!(main, crate::bench_probe::send(engine, probes, &done));
    let (counters, sent) = (counters?, sent?);
    crate::bench_probe::finish(engine, &sent).await?;
    let now = pipeline::embedded::tally();
    let writes = Writes {
        rows: now.rows - tally.rows,
        bytes: now.bytes - tally.bytes,
        os_bytes: os_bytes.zip(os_bytes_written()).map(|(before, after)| after.saturating_sub(before)),
    };
    let mut lost = 0;
    for ((t, c), share) in &campaigns {
        lost += share.saturating_sub(terminal_rows(engine, *t, *c).await?);
    }
    Ok(Run { campaigns, counters, started_ms, elapsed_s, setup_s, lost, burst, writes, probes: sent })
}

/// What this process wrote during a run (see `pipeline::embedded::writes`).
pub(crate) struct Writes {
    pub rows: u64,
    pub bytes: u64,
    pub os_bytes: Option<u64>,
}

/// Bytes this process has handed to `write` calls (`wchar` of `/proc/self/io`), where known.
fn os_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok())
}

/// What a bench run measured on Herald's side, for [`report`].
pub(crate) struct Run {
    pub campaigns: Vec<((TenantId, CampaignId), u64)>,
    pub counters: Vec<storage::model::CampaignCounters>,
    pub started_ms: u64,
    pub elapsed_s: f64,
    pub setup_s: f64,
    pub lost: u64,
    pub burst: u32,
    pub writes: Writes,
    pub probes: Vec<crate::bench_probe::Probe>,
}

/// The report from Herald's figures and the provider's own ledger.
pub(crate) fn report(args: &BenchArgs, run: &Run, ledger: &Ledger, stages: Vec<StageReport>) -> BenchReport {
    let per_tenant: Vec<TenantReport> = run
        .campaigns
        .iter()
        .map(|((t, _), _)| {
            let calls = ledger.tenants.get(t).cloned().unwrap_or_default();
            TenantReport {
                tenant: t.0,
                rate_limit: args.rate_per_tenant,
                achieved_rate: calls.achieved_rate(),
                max_1s_window: calls.max_1s_window,
                accepts: calls.accepts,
                first_call_s: Some(calls.first_ms.saturating_sub(run.started_ms) as f64 / 1000.0),
                last_call_s: Some(calls.last_ms.saturating_sub(run.started_ms) as f64 / 1000.0),
            }
        })
        .collect();
    let counters = &run.counters;
    let terminal: u64 = counters.iter().map(|c| c.terminal()).sum();
    let per_message = terminal.max(1) as f64;
    let shares: Vec<f64> = per_tenant
        .iter()
        .map(|t| match t.rate_limit {
            Some(limit) => t.achieved_rate / f64::from(limit),
            None => t.achieved_rate,
        })
        .collect();
    BenchReport {
        backend: "embedded",
        workers: 1,
        recipients: args.recipients,
        tenants: run.campaigns.len() as u32,
        elapsed_s: run.elapsed_s,
        setup_s: run.setup_s,
        throughput_msgs_per_s: terminal as f64 / run.elapsed_s.max(1e-9),
        provider_calls: ledger.calls,
        provider_accepts: ledger.accepts,
        duplicate_accepts: ledger.duplicate_accepts,
        lost: run.lost,
        delivered: counters.iter().map(|c| c.delivered + c.read).sum(),
        failed: counters.iter().map(|c| c.failed).sum(),
        dead_lettered: counters.iter().map(|c| c.dead_lettered).sum(),
        p50_ms: Some(ledger.latency_ms.value_at_quantile(0.5)),
        p99_ms: Some(ledger.latency_ms.value_at_quantile(0.99)),
        peak_rss_bytes: crate::peak_rss_bytes(),
        worker_peak_rss_bytes: Vec::new(),
        writes_per_message: Some(run.writes.rows as f64 / per_message),
        bytes_written_per_message: Some(run.writes.bytes as f64 / per_message),
        os_bytes_written_per_message: run.writes.os_bytes.map(|b| b as f64 / per_message),
        row_reads_per_message: None,
        fairness_jain: jain(&shares),
        burst_per_tenant: run.burst,
        stages,
        lag: Vec::new(),
        per_tenant,
        probes: crate::bench_probe::report(&run.probes, ledger),
    }
}

/// The human-readable report.
pub fn print(report: &BenchReport) {
    println!(
        "herald bench: {} recipients over {} tenants ({} backends, {} process{} running the stages)",
        report.recipients,
        report.tenants,
        report.backend,
        report.workers,
        if report.workers == 1 { "" } else { "es" }
    );
    println!("  setup            {:>10.2} s (seeding audiences, not timed below)", report.setup_s);
    println!("  elapsed          {:>10.2} s (trigger → every campaign completed)", report.elapsed_s);
    println!("  throughput       {:>10.0} msgs/s reaching a terminal state", report.throughput_msgs_per_s);
    println!("  provider calls   {:>10} ({} accepted)", report.provider_calls, report.provider_accepts);
    println!("  delivered        {:>10}", report.delivered);
    println!("  failed / DLQ     {:>10} / {}", report.failed, report.dead_lettered);
    println!("  duplicates       {:>10}", report.duplicate_accepts);
    println!("  lost             {:>10}", report.lost);
    if let (Some(p50), Some(p99)) = (report.p50_ms, report.p99_ms) {
        println!("  accept latency   p50 {p50} ms, p99 {p99} ms (from trigger)");
    }
    println!("  peak RSS         {:>10.1} MiB", report.peak_rss_bytes as f64 / (1 << 20) as f64);
    for (i, rss) in report.worker_peak_rss_bytes.iter().enumerate() {
        println!("  worker {i} peak RSS {:>8.1} MiB", *rss as f64 / (1 << 20) as f64);
    }
    if let (Some(rows), Some(bytes)) = (report.writes_per_message, report.bytes_written_per_message) {
        println!("  writes           {rows:>10.2} rows/message, {bytes:.0} bytes/message (store and topics, logical)");
    }
    if let Some(os) = report.os_bytes_written_per_message {
        println!("  bytes to write() {os:>10.0} per message (journal, flushes and compaction included)");
    }
    if let Some(reads) = report.row_reads_per_message {
        println!("  row reads        {reads:>10.2} per message (reconcile, past its recent-row cache)");
    }
    println!("  fairness (Jain)  {:>10.4}", report.fairness_jain);
    if let Some(p) = &report.probes {
        println!(
            "  probes           {:>10} campaigns of {} sent during the run: send → first call p50 {} ms, p99 {} ms, \
             max {} ms; → last call p99 {} ms",
            p.sent,
            p.recipients_each,
            p.first_call_p50_ms,
            p.first_call_p99_ms,
            p.first_call_max_ms,
            p.last_call_p99_ms
        );
    }
    for l in &report.lag {
        println!(
            "  lag {:<20} max {:>9} records behind, {:>6} at the end; records per partition {:?}",
            l.stage, l.max_lag, l.final_lag, l.records_per_partition
        );
    }
    for s in &report.stages {
        println!(
            "  stage {:<18} {:>8} records in, {:>8} steps, {:>7} held, busy {:>8.1} s",
            s.stage, s.records_in, s.steps, s.held_records, s.busy_s
        );
    }
    for t in &report.per_tenant {
        let limit = t
            .rate_limit
            .map(|l| format!("{l}/s (+{} burst)", report.burst_per_tenant))
            .unwrap_or_else(|| "unlimited".into());
        println!(
            "  tenant {:>3}: limit {limit}, achieved {:.1}/s, max in any 1 s window {}, accepted {}",
            t.tenant, t.achieved_rate, t.max_1s_window, t.accepts
        );
    }
}
