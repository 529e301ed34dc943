//! `herald`: the command line. Subcommands map to the library half in `src/lib.rs`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::config::HeraldConfig;
use herald::{bench, demo, mock_provider, serve};
use std::path::PathBuf;

/// jemalloc instead of glibc malloc: the pipeline allocates and frees many short-lived batch
/// buffers across threads, where glibc spent ~20% of CPU (profile in the issue note). It
/// replaced mimalloc, which held more freed memory in RSS (median of 3 alternated, peak RSS:
/// 1M x 4 181.9 vs 224.7 MiB, 10M x 4 222.6 vs 271.2, wall 0.920 both; ARCHITECTURE.md, "The
/// allocator: jemalloc").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads at its first allocation, before `main`; each one can be
/// overridden through `_RJEM_MALLOC_CONF` in the environment (the options that variable names
/// are applied after these):
/// - `background_thread:true`: freed pages are returned by jemalloc's own thread, on time,
///   instead of whenever an allocating thread happens to pass by;
/// - `dirty_decay_ms:100`: freed pages go back to the OS after ~100 ms (jemalloc's default is
///   10 s; 0, at once, cost 39% of throughput at 1M x 4);
/// - `muzzy_decay_ms:0`: and are not kept as lazily freed pages after that;
/// - `percpu_arena:percpu`: one arena per CPU, not four per CPU, so fewer arenas each hold
///   their own freed pages, however many cores the machine has (1M x 4, single runs on 2
///   cores: peak 179.1 and 178.0 MiB, as `narenas:2` gave 184.5 and 177.2 at the same
///   throughput; jemalloc's default there gave a median of 188.6 on another day).
///
/// `tests::jemalloc_runs_with_these_options` reads them back from jemalloc.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Option<&'static std::ffi::c_char> = Some(
    // SAFETY: a pointer to the first byte of a static C string literal is valid for 'static.
    unsafe { &*MALLOC_OPTIONS.as_ptr() },
);

#[cfg(feature = "jemalloc")]
const MALLOC_OPTIONS: &std::ffi::CStr =
    c"background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0,percpu_arena:percpu";

/// Turns transparent huge pages off for this process unless `HERALD_ALLOW_THP` is set. With
/// them, an allocator's arena can be backed by 2 MiB pages, each resident as a whole however
/// little of it is in use: measured with mimalloc, which asks for them, 112 MiB of
/// `AnonHugePages` mid-run at 1M x 4 and peak RSS 295.3 MiB with them, 250.9 without, wall 0.986
/// (median of 3 alternated; ARCHITECTURE.md, "Write path and memory budget"). jemalloc does
/// not ask for them, but a kernel set to `always` gives them anyway. Memory faulted in before
/// this call keeps its pages; the flag covers every later fault and khugepaged.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    if std::env::var_os("HERALD_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!("herald: could not turn transparent huge pages off: {}", std::io::Error::last_os_error());
    }
}

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald: a multi-tenant streaming broadcast engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the pipeline (embedded default; zero configuration needed).
    Serve {
        /// Listen address (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Where `/metrics` is served (default 127.0.0.1:9464; `off` disables it).
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Data directory (default ./herald-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (default ./herald.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `all` (default): the API and every stage; `api`: the API and scheduler only, the
        /// stages running in `herald worker` processes.
        #[arg(long, default_value = "all", value_parser = ["all", "api"])]
        role: String,
    },
    /// Run stages of the distributed deployment (`[backend] kind = "distributed"`) without the
    /// API; several workers share each stage's partitions by lease.
    Worker {
        /// Comma-separated: chunk, render, throttle, deliver, reconcile.
        #[arg(long, value_delimiter = ',', default_value = "chunk,render,throttle,deliver,reconcile")]
        stages: Vec<String>,
        /// Configuration file (default ./herald.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a bearer token signed with the configured key.
    Token {
        /// platform_admin, tenant_admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// The tenant the token acts in (required except for platform_admin).
        #[arg(long)]
        tenant: Option<u64>,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long, default_value = "herald-cli")]
        sub: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run one campaign end to end on the embedded default, with a live progress bar.
    Demo {
        /// Synthetic recipients in the demo audience.
        #[arg(long, default_value_t = 100_000)]
        recipients: u64,
        /// Where the embedded store, topics and simulator calls log live.
        #[arg(long, default_value = "./herald-data")]
        data_dir: PathBuf,
        /// Messages per second for the demo tenant (0: unlimited).
        #[arg(long, default_value_t = 20_000)]
        rate: u32,
        /// Print the final summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Drive the whole pipeline with simulated providers and report throughput, latency,
    /// rate accuracy, fairness and memory.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        recipients: u64,
        #[arg(long, default_value_t = 4)]
        tenants: u32,
        /// Messages per second per tenant (default: unlimited).
        #[arg(long)]
        rate_per_tenant: Option<u32>,
        /// Simulated provider latency (jitter adds up to half of it).
        #[arg(long, default_value_t = 2)]
        provider_latency_ms: u64,
        /// Share of provider calls failing transiently (retried).
        #[arg(long, default_value_t = 0.0)]
        failure_rate: f64,
        /// Data directory (default: a temporary one, removed afterwards).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Embedded: what the store and topic databases may hold in memory, MiB (16 or more).
        #[arg(long, default_value_t = herald::backend::DEFAULT_MEMORY_BUDGET_MIB)]
        memory_budget_mib: u64,
        /// Small campaigns (1,000 recipients, a tenant each) sent one per second while the big
        /// ones run: reports send → first provider call behind a big campaign.
        #[arg(long, default_value_t = 0)]
        probes: u32,
        /// Print exactly one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Also write a self-contained HTML report with charts here (embedded, simulator).
        #[arg(long)]
        report: Option<PathBuf>,
        /// `simulator` (in process) or `mock-http` (WhatsApp Cloud API over real HTTP against an
        /// in-process `herald mock-provider`, receipts by signed webhooks).
        #[arg(long, default_value = "simulator")]
        provider: String,
        /// With `mock-http`: messages per second per sender, enforced by the mock (130429).
        #[arg(long, default_value_t = 1_000)]
        mock_mps: u32,
        /// `embedded` (in this process) or `distributed` (the `[fluvio]`, `[scylla]` and `[redis]`
        /// of `--config`, stages in `--workers` separate `herald worker` processes).
        #[arg(long, default_value = "embedded")]
        backend: String,
        /// With `--backend distributed`: the configuration file (also handed to the workers).
        #[arg(long)]
        config: Option<PathBuf>,
        /// With `--backend distributed`: how many `herald worker` processes run the stages.
        #[arg(long, default_value_t = 1)]
        workers: u32,
    },
    /// Create or upgrade the ScyllaDB schema of the distributed deployment (`[scylla]`):
    /// versioned and idempotent, safe to run again and from several hosts.
    Migrate {
        /// Configuration file (default ./herald.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A stand-in WhatsApp Cloud API + SMS API server: enforces per-sender throughput (130429)
    /// and pair rate (131056), posts signed status webhooks, logs every call as JSON lines.
    MockProvider(mock_provider::MockArgs),
}

fn main() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    disable_transparent_huge_pages();
    let result = run();
    // A configuration Herald refuses (e.g. an empty secret file) exits with status 2.
    if let Err(e) = &result {
        if let Some(config) = e.chain().find_map(|c| c.downcast_ref::<herald::config::ConfigError>()) {
            eprintln!("herald: refusing to start: {config}");
            std::process::exit(2);
        }
    }
    result
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = herald::telemetry::Telemetry::init()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Worker { stages, config } => {
                let mut cfg = HeraldConfig::load(config.as_deref())?;
                cfg.stages = Some(stages);
                cfg.validate()?;
                serve::run_worker(cfg).await?;
            }
            Command::Serve { listen, metrics_listen, data_dir, config, role } => {
                let mut cfg = HeraldConfig::load(config.as_deref())?;
                if role == "api" {
                    cfg.stages = Some(Vec::new());
                }
                if let Some(l) = listen {
                    cfg.listen = l;
                }
                if let Some(m) = metrics_listen {
                    cfg.metrics_listen = m;
                }
                if let Some(d) = data_dir {
                    cfg.data_dir = d;
                }
                cfg.validate()?;
                serve::run(cfg).await?;
            }
            Command::Token { role, tenant, ttl, sub, data_dir, config } => {
                let mut cfg = HeraldConfig::load(config.as_deref())?;
                if let Some(d) = data_dir {
                    cfg.data_dir = d;
                }
                let role: api::Role = role.parse().map_err(anyhow::Error::msg)?;
                if role != api::Role::PlatformAdmin && tenant.is_none() {
                    anyhow::bail!("--tenant is required for role {role:?}");
                }
                let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + parse_ttl(&ttl)?;
                let claims = api::Claims::new(sub, tenant, role, exp);
                println!("{}", cfg.auth()?.mint(&claims).map_err(anyhow::Error::msg)?);
            }
            Command::Demo { recipients, data_dir, rate, json } => {
                let summary = demo::run(demo::DemoArgs { recipients, data_dir, rate, json }).await?;
                if json {
                    println!("{}", serde_json::to_string(&summary)?);
                } else {
                    println!(
                        "Campaign {} {}: {} messages — {} delivered, {} read, {} failed, {} suppressed, {} dead-lettered in {:.1} s.",
                        summary.campaign,
                        if summary.completed { "completed" } else { "interrupted (run again to resume)" },
                        summary.counters.total.unwrap_or(0),
                        summary.counters.delivered,
                        summary.counters.read,
                        summary.counters.failed,
                        summary.counters.suppressed,
                        summary.counters.dead_lettered,
                        summary.elapsed_s
                    );
                    println!("The simulated provider's own record of calls: {}", summary.calls_log);
                }
            }
            Command::Bench {
                recipients,
                tenants,
                rate_per_tenant,
                provider_latency_ms,
                failure_rate,
                data_dir,
                memory_budget_mib,
                probes,
                json,
                report,
                provider,
                mock_mps,
                backend,
                config,
                workers,
            } => {
                if !(0.0..=1.0).contains(&failure_rate) {
                    anyhow::bail!("--failure-rate must be between 0 and 1");
                }
                let min = herald::backend::MIN_MEMORY_BUDGET_MIB;
                anyhow::ensure!(memory_budget_mib >= min, "--memory-budget-mib must be {min} or more");
                let mock_http = match provider.as_str() {
                    "simulator" => None,
                    "mock-http" => Some(mock_mps),
                    other => anyhow::bail!("--provider {other:?}: expected simulator or mock-http"),
                };
                anyhow::ensure!(
                    probes == 0 || mock_http.is_none(),
                    "--probes needs the simulator provider (its ledger times each tenant's first call)"
                );
                anyhow::ensure!(
                    report.is_none() || (mock_http.is_none() && backend == "embedded"),
                    "--report needs the embedded backend and the simulator provider (its charts read this \
                     process's stage counters and the simulator's calls)"
                );
                let args = bench::BenchArgs {
                    recipients,
                    tenants,
                    rate_per_tenant,
                    provider_latency_ms,
                    failure_rate,
                    data_dir,
                    memory_budget_mib,
                    probes,
                    report,
                    mock_http,
                    distributed: match backend.as_str() {
                        "embedded" => None,
                        "distributed" => {
                            anyhow::ensure!(mock_http.is_none(), "--backend distributed runs the simulator provider");
                            anyhow::ensure!((1..=64).contains(&workers), "--workers must be between 1 and 64");
                            let mut cfg = HeraldConfig::load(config.as_deref())?;
                            cfg.backend.kind = herald::backend::BackendKind::Distributed;
                            cfg.validate()?;
                            Some(herald::bench_distributed::DistributedBench {
                                config: cfg,
                                config_path: config,
                                workers,
                            })
                        }
                        other => anyhow::bail!("--backend {other:?}: expected embedded or distributed"),
                    },
                };
                let report = bench::run(args).await?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    bench::print(&report);
                }
            }
            Command::Migrate { config } => {
                let cfg = HeraldConfig::load(config.as_deref())?;
                let distributed = cfg.distributed()?;
                let applied = storage::scylla::migrate(&distributed.scylla)
                    .await
                    .with_context(|| format!("migrating keyspace {} at {:?}", distributed.scylla.keyspace, distributed.scylla.nodes))?;
                let latest = storage::scylla::MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
                if applied.is_empty() {
                    println!("keyspace {} is at schema version {latest}; nothing to apply", distributed.scylla.keyspace);
                } else {
                    println!("keyspace {}: applied schema versions {applied:?}", distributed.scylla.keyspace);
                }
            }
            Command::MockProvider(args) => {
                args.validate()?;
                mock_provider::run(args).await?;
            }
        }
        Ok(())
    });
    telemetry.shutdown();
    result
}

/// Parses `30s`, `15m`, `1h`, `7d` into seconds.
fn parse_ttl(raw: &str) -> anyhow::Result<u64> {
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = number.parse().map_err(|_| anyhow::anyhow!("--ttl {raw:?}: expected e.g. 30m, 1h, 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("--ttl {raw:?}: unit must be s, m, h or d"),
    };
    Ok(n * unit)
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use std::ffi::{c_void, CStr};

    /// Reads the jemalloc option `name` (e.g. `c"opt.dirty_decay_ms"`) as a `T`, into `value`.
    fn option<T>(name: &CStr, mut value: T) -> T {
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `value` and `len` are valid for writes, and `len` is the size of `T`, which
        // is the type jemalloc documents for each option read below.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut T).cast::<c_void>(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        value
    }

    /// The options `MALLOC_CONF` names are the ones jemalloc runs with: the symbol is the one
    /// the prefixed jemalloc reads, and each option parsed. Fails when the environment sets
    /// `_RJEM_MALLOC_CONF` to something else.
    #[test]
    fn jemalloc_runs_with_these_options() {
        assert!(option(c"opt.background_thread", false));
        assert_eq!(option(c"opt.dirty_decay_ms", -2isize), 100);
        assert_eq!(option(c"opt.muzzy_decay_ms", -2isize), 0);
        let arena = option(c"opt.percpu_arena", std::ptr::null::<std::ffi::c_char>());
        assert!(!arena.is_null());
        // SAFETY: jemalloc returned a pointer to one of its static option names.
        assert_eq!(unsafe { CStr::from_ptr(arena) }, c"percpu");
    }
}
