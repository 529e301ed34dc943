//! `herald bench --backend distributed`: the same load through the distributed backends
//! (Fluvio topics, the CQL store, Redis shared state) with the stages in `--workers` separate
//! `herald worker` processes, each with its own simulator provider writing a calls log.
//!
//! This process seeds and triggers the campaigns (the API's part) and runs no stage. The
//! provider's view is the merged calls logs of every worker (duplicates across processes are
//! caught there); Herald's view is the shared store (counters, lost). Every second it samples
//! each stage group's lag (records behind its input topic, summed over partitions) and, at the
//! end, how many records each partition of its input received during the run.
//!
//! It is not: a cluster launcher. The servers must be running (`[fluvio]`, `[scylla]`,
//! `[redis]` of the configuration).

use crate::bench::{report, run_campaigns, seed, BenchArgs, BenchReport, StageLag};
use crate::config::HeraldConfig;
use crate::engine::{Engine, EngineConfig};
use anyhow::Context;
use pipeline::TopicBackend;
use stages::deliver::simulator::Ledger;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// `herald bench --backend distributed`'s own settings.
#[derive(Debug, Clone)]
pub struct DistributedBench {
    /// The configuration (its `[backend] kind` is distributed).
    pub config: HeraldConfig,
    /// The file it came from, handed to the workers (`None`: defaults and environment).
    pub config_path: Option<PathBuf>,
    pub workers: u32,
}

/// A `herald worker` child, stopped (SIGTERM, drain) when the run ends or fails.
struct Worker {
    child: Child,
    dir: PathBuf,
}

impl Worker {
    fn spawn(bench: &DistributedBench, args: &BenchArgs, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("worker.log"))?;
        let mut cmd = Command::new(std::env::current_exe().context("finding the herald binary")?);
        cmd.arg("worker");
        if let Some(path) = &bench.config_path {
            cmd.arg("--config").arg(path);
        }
        cmd.env("HERALD_DATA_DIR", dir)
            .env("HERALD_METRICS_LISTEN", "off")
            .env("HERALD_SIMULATOR_LATENCY_MS", args.provider_latency_ms.to_string())
            .env("HERALD_SIMULATOR_RECEIPT_DELAY_MS", "200")
            .env("HERALD_SIMULATOR_FAILURE_RATE", args.failure_rate.to_string())
            // `worker started` (below) must reach the log whatever the level asked for.
            .env(
                "HERALD_LOG",
                format!("{},herald::serve=info", std::env::var("HERALD_LOG").unwrap_or_else(|_| "warn".into())),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        Ok(Self { child: cmd.spawn().context("starting a herald worker")?, dir: dir.to_path_buf() })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the worker says it started (its backends open, its stages running).
    async fn started(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::read_to_string(self.dir.join("worker.log")).unwrap_or_default();
            if log.contains("worker started") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "a worker exited ({status}) before starting; see {}",
                    self.dir.join("worker.log").display()
                );
            }
            anyhow::ensure!(Instant::now() < deadline, "a worker did not start within 120 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM (the worker drains and hands its partitions back), then its peak RSS.
    async fn stop(mut self) -> anyhow::Result<u64> {
        let Some(pid) = self.pid() else { return Ok(0) };
        let peak = crate::peak_rss_of(&pid.to_string());
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.is_err() {
            tracing::warn!(pid, "a worker did not drain within 60 s; killing it");
            self.child.kill().await?;
        }
        Ok(peak)
    }
}

/// Per stage: the most records behind seen, the last sample, and its input partitions' end
/// offsets when sampling began and at the last sample.
#[derive(Default)]
struct Lag {
    max: u64,
    last: u64,
    first_ends: Vec<u64>,
    last_ends: Vec<u64>,
}

type Lags = Arc<Mutex<BTreeMap<&'static str, Lag>>>;

/// Samples every stage group's lag once.
async fn sample(topics: &dyn TopicBackend, lags: &Lags) {
    for stage in pipeline::topics::STAGES {
        let (mut behind, mut ends) = (0, Vec::new());
        for p in 0..stage.input.partitions() {
            let (Ok(end), Ok(committed)) =
                (topics.end_offset(stage.input.name, p).await, topics.committed(stage.input.name, stage.name, p).await)
            else {
                ends.clear();
                break;
            };
            let start = match committed {
                Some(c) => c,
                None => topics.start_offset(stage.input.name, p).await.unwrap_or(0),
            };
            behind += end.saturating_sub(start);
            ends.push(end);
        }
        let mut lags = lags.lock().unwrap_or_else(|p| p.into_inner());
        let entry = lags.entry(stage.name).or_default();
        (entry.max, entry.last) = (entry.max.max(behind), behind);
        if ends.len() == stage.input.partitions() as usize {
            if entry.first_ends.is_empty() {
                entry.first_ends = ends.clone();
            }
            entry.last_ends = ends;
        }
    }
}

/// Samples every stage group's lag once a second until the task is aborted.
fn sample_lag(topics: Arc<dyn TopicBackend>) -> (Lags, tokio::task::JoinHandle<()>) {
    let lags: Lags = Arc::default();
    let out = lags.clone();
    let task = tokio::spawn(async move {
        loop {
            sample(topics.as_ref(), &out).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (lags, task)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let bench = args.distributed.clone().context("a distributed bench needs its configuration")?;
    let dir = tempfile::tempdir()?;
    let mut engine_config = EngineConfig::new(dir.path().join("api"));
    engine_config.backend = crate::backend::BackendChoice::Distributed(Box::new(bench.config.distributed()?));
    engine_config.stages = Some(Vec::new());
    let setup = Instant::now();
    let engine = Engine::start(engine_config).await?;
    let mut workers = Vec::new();
    for i in 0..bench.workers.max(1) {
        workers.push(Worker::spawn(&bench, &args, &dir.path().join(format!("worker-{i}")))?);
    }
    for w in &mut workers {
        w.started().await?;
    }
    let (campaigns, burst) = seed(&engine, &args).await?;
    let probes = crate::bench_probe::seed(&engine, args.probes).await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let (lag, sampler) = sample_lag(engine.topics.clone());
    let run = run_campaigns(&engine, campaigns, &probes, setup_s, burst).await;
    sampler.abort();
    let run = run?;
    sample(engine.topics.as_ref(), &lag).await;
    let mut worker_peak_rss_bytes = Vec::new();
    let mut logs = Vec::new();
    for w in workers {
        logs.push(w.dir.join("provider-calls.jsonl"));
        worker_peak_rss_bytes.push(w.stop().await?);
    }
    engine.stop().await?;
    let ledger = Ledger::from_call_logs(&logs, run.started_ms)?;
    let lag = lag
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(stage, l)| StageLag {
            stage,
            max_lag: l.max,
            final_lag: l.last,
            records_per_partition: l.last_ends.iter().zip(&l.first_ends).map(|(e, f)| e.saturating_sub(*f)).collect(),
        })
        .collect();
    Ok(BenchReport {
        backend: "distributed",
        workers: bench.workers.max(1),
        worker_peak_rss_bytes,
        lag,
        // The stages write in the worker processes, not in this one.
        writes_per_message: None,
        bytes_written_per_message: None,
        os_bytes_written_per_message: None,
        row_reads_per_message: None,
        ..report(&args, &run, &ledger, Vec::new())
    })
}
