//! The kill drill: a WhatsApp campaign through a real `herald mock-provider` process while the
//! `herald serve` process is SIGKILLed again and again, restarted each time on the same data
//! dir. The mock's calls log (written before it answers, independent of Herald) must show every
//! recipient accepted exactly once: no duplicate, and no message failed without a call — a call
//! in flight at a kill is settled by its receipt, or sent again after the receipt grace when no
//! receipt says it arrived.
//!
//! CI runs a small drill; the full drill is
//! `HERALD_DRILL_RECIPIENTS=50000 HERALD_DRILL_KILLS=10 HERALD_DRILL_MPS=4000
//!  cargo test --release --test kill_drill -- --nocapture`.

mod common;

use common::*;
use herald::config::HeraldConfig;
use herald::mock_provider::calls::analyze;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `herald serve` child on `port` over `data_dir`, its log appended to `log`.
async fn serve(port: u16, data_dir: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
        .env("HERALD_DATA_DIR", data_dir)
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_METRICS_LISTEN", "off")
        .env("HERALD_ALLOW_PRIVATE_PROVIDER_ADDRESSES", "true")
        // A call in doubt after a kill waits this long for its receipt before it is sent again.
        .env("HERALD_RECEIPT_GRACE_MS", "5000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting herald serve");
    wait_healthy(port, Duration::from_secs(60), "herald serve").await;
    child
}

/// Accepted calls in the mock's log.
fn accepted(log: &Path) -> u64 {
    analyze(log, 0).map(|s| s.accepted).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_drill_sends_every_recipient_exactly_once() {
    let recipients = setting("HERALD_DRILL_RECIPIENTS", 3_000);
    let kills = setting("HERALD_DRILL_KILLS", 3);
    let mps = setting("HERALD_DRILL_MPS", 1_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("herald");
    let log = dir.path().join("mock-calls.jsonl");
    let herald_log = dir.path().join("herald.log");
    let (port, mock_port) = (free_port(), free_port());
    let webhook = format!("http://127.0.0.1:{port}/webhooks/whatsapp");
    let _mock = MockProcess::start(mock_port, &webhook, &log, &["--mps", &mps.to_string()]).await;
    let mut herald = serve(port, &data, &herald_log).await;

    let mut config = HeraldConfig::default();
    config.jwt.secret = Some(SECRET.into());
    let api = Api::new(format!("http://127.0.0.1:{port}"), config);
    let (tenant, admin, op) = tenant_with_admin(&api, "drill").await;
    let provider = format!("http://127.0.0.1:{mock_port}");
    put_whatsapp(&api, tenant, &admin, &provider, "PN-DRILL", mps as u32, serde_json::json!({})).await;
    let template = whatsapp_template(&api, &op).await;
    let audience = audience(&api, &op, recipients as usize, false).await;
    let campaign = send(&api, &op, template, audience).await;

    // Kill at evenly spread points of the campaign, restarting each time.
    let mut kill_points = Vec::new();
    for k in 1..=kills {
        let target = recipients * k / (kills + 1);
        let deadline = Instant::now() + Duration::from_secs(300);
        while accepted(&log) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        herald.kill().unwrap(); // SIGKILL: no drain, no flush
        herald.wait().unwrap();
        kill_points.push(accepted(&log));
        herald = serve(port, &data, &herald_log).await;
    }
    let done = api.wait_status(&op, campaign, "completed", Duration::from_secs(600)).await;
    let _ = herald.kill();
    let _ = herald.wait();

    let calls = analyze(&log, 0).unwrap();
    // Calls in flight at a kill, found again after the restart (bounded by the concurrency).
    let in_doubt = std::fs::read_to_string(&herald_log).unwrap_or_default().matches("call in doubt").count();
    let failed = done["failed"].as_u64().unwrap();
    let summary = serde_json::json!({
        "recipients": recipients, "kills": kills, "mps": mps, "kill_points": kill_points,
        "provider_calls": calls.calls, "accepted_at_provider": calls.accepted,
        "duplicates": calls.duplicate_message_ids, "failed": failed, "calls_in_doubt_after_kills": in_doubt,
        "never_reached_provider": recipients - calls.accepted.min(recipients),
        "delivered": done["delivered"], "read": done["read"],
    });
    eprintln!("kill drill: {summary}");
    assert_eq!(calls.duplicate_message_ids, 0, "{summary}");
    assert_eq!(calls.accepted, recipients, "every recipient reached the provider exactly once: {summary}");
    assert_eq!(failed, 0, "no message failed: {summary}");
    assert_eq!(done["total"].as_u64(), Some(recipients));
}
