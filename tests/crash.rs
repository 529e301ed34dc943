//! Crash safety, proved: a campaign runs in a child `herald demo` process that is SIGKILLed at
//! three different points, then restarted on the same data dir until it completes. The
//! simulated provider's calls log — written by the provider before it answers, independent of
//! Herald's ledger, and surviving the kills — must show every recipient accepted exactly once,
//! and the final run must report every message terminal.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RECIPIENTS: u64 = 20_000;

fn herald(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["demo", "--json", "--recipients", &RECIPIENTS.to_string(), "--rate", "5000", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn accepted_calls(log: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else { return Vec::new() };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("provider_message_id").is_some())
        .map(|v| v["message_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn sigkill_mid_campaign_never_duplicates_or_loses() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("provider-calls.jsonl");
    let mut kill_points = Vec::new();
    for fraction in [0.15, 0.45, 0.75] {
        let mut child = herald(dir.path()).stdout(Stdio::null()).spawn().unwrap();
        let target = (RECIPIENTS as f64 * fraction) as usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while accepted_calls(&log).len() < target && Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // SIGKILL: no chance to flush or drain.
        child.kill().unwrap();
        child.wait().unwrap();
        kill_points.push(accepted_calls(&log).len());
    }
    assert!(
        kill_points.windows(2).all(|w| w[0] < w[1]) && *kill_points.last().unwrap() < RECIPIENTS as usize,
        "the kills must land at three different points mid-campaign: {kill_points:?}"
    );

    // Restart until the campaign completes.
    let mut summary = serde_json::Value::Null;
    for _ in 0..5 {
        let out = herald(dir.path()).output().unwrap();
        assert!(out.status.success(), "restart failed: {}", String::from_utf8_lossy(&out.stderr));
        summary = serde_json::from_slice(&out.stdout).unwrap();
        if summary["completed"] == true {
            break;
        }
    }
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["total"], RECIPIENTS, "{summary}");
    let terminal: u64 = ["delivered", "read", "failed", "suppressed", "cancelled", "dead_lettered"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
    assert_eq!(terminal, RECIPIENTS, "every message terminal: {summary}");

    let calls = accepted_calls(&log);
    let mut per_message: HashMap<&str, u32> = HashMap::new();
    for id in &calls {
        *per_message.entry(id.as_str()).or_default() += 1;
    }
    let duplicates: Vec<_> = per_message.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "provider accepted messages more than once: {:?}",
        &duplicates[..duplicates.len().min(5)]
    );
    assert_eq!(
        per_message.len() as u64,
        RECIPIENTS,
        "every recipient accepted exactly once (kills at {kill_points:?})"
    );
}
