//! `herald bench --json` on the embedded default: the report a run prints, including the write
//! figures issue 12 tracks (rows and bytes written per message). Figures are checked for
//! sense, never for speed: speed is measured by the bench itself, not asserted in tests.

mod common;

use serde_json::Value;
use std::process::Command;

/// Runs `herald bench --json` with `args` and returns its report.
fn bench_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("HERALD_LOG", "error")
        .output()
        .expect("herald bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[test]
fn an_embedded_bench_reports_its_writes_per_message() {
    let report = bench_json(&["--recipients", "2000", "--tenants", "2"]);
    assert_eq!((report["duplicate_accepts"].as_u64(), report["lost"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(report["delivered"].as_u64(), Some(2000), "{report}");
    // Every message is at least rendered, claimed and logged: a few rows each, not thousands.
    let rows = report["writes_per_message"].as_f64().expect("writes per message");
    assert!((2.0..100.0).contains(&rows), "{report}");
    let bytes = report["bytes_written_per_message"].as_f64().expect("bytes per message");
    assert!(bytes > rows * 16.0, "a row carries at least its key: {report}");
    assert!(report["os_bytes_written_per_message"].as_f64().is_some_and(|b| b > 0.0), "{report}");
    // Each message's acceptance and receipt come to reconcile once each: at most two rows to
    // look for, fewer when its recent-row cache holds the accepted row.
    let reads = report["row_reads_per_message"].as_f64().expect("row reads per message");
    assert!((0.0..=2.0).contains(&reads), "{report}");
}

#[test]
fn probes_sent_behind_a_running_campaign_report_their_wait() {
    // 3,000 messages paced at 1,000/s keep the big campaign busy for ~3 s: two probes go out.
    let report = bench_json(&["--recipients", "3000", "--tenants", "1", "--rate-per-tenant", "1000", "--probes", "2"]);
    assert_eq!((report["duplicate_accepts"].as_u64(), report["lost"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(report["delivered"].as_u64(), Some(3000), "the main figures are the big campaign's: {report}");
    assert_eq!(report["provider_accepts"].as_u64(), Some(3000 + 2 * 1000), "every probe message was sent: {report}");
    let probes = &report["probes"];
    assert_eq!((probes["sent"].as_u64(), probes["recipients_each"].as_u64()), (Some(2), Some(1000)), "{report}");
    let ms = |k: &str| probes[k].as_u64().unwrap_or_else(|| panic!("{k} in {report}"));
    assert!(ms("first_call_p50_ms") <= ms("first_call_p99_ms"), "{report}");
    assert!(ms("first_call_p99_ms") <= ms("first_call_max_ms"), "{report}");
    assert!(ms("last_call_p99_ms") >= ms("first_call_p99_ms"), "{report}");
    let each: Vec<u64> =
        probes["first_call_ms"].as_array().expect("first_call_ms").iter().filter_map(|v| v.as_u64()).collect();
    assert_eq!(each.len(), 2, "one wait per probe sent: {report}");
    assert_eq!(each.iter().max().copied(), Some(ms("first_call_max_ms")), "{report}");
}

#[test]
fn a_memory_budget_below_the_floor_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["bench", "--recipients", "10", "--memory-budget-mib", "8", "--json"])
        .output()
        .expect("herald bench runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory-budget-mib must be 16 or more"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_its_charts_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    // 2 tenants × 6,000 at 2,000/s: ~3 s of samples, with a limit line on the sender chart.
    let report = bench_json(&[
        "--recipients",
        "12000",
        "--tenants",
        "2",
        "--rate-per-tenant",
        "2000",
        "--report",
        html.to_str().unwrap(),
    ]);
    assert_eq!((report["duplicate_accepts"].as_u64(), report["lost"].as_u64()), (Some(0), Some(0)), "{report}");
    let text = std::fs::read_to_string(&html).expect("the report was written");
    assert!(!text.contains("<script") && !text.contains("http://") && !text.contains("https://"), "self-contained");
    assert!(text.contains("&quot;throughput_msgs_per_s&quot;"), "the JSON figures are in the page");

    let Some((_driver, client)) = common::browser::browser("the bench report's browser test").await else { return };
    client.goto(&format!("file://{}", html.display())).await.unwrap();
    // What the browser laid out: every chart has a size, lines have length, bars have height.
    let drawn = client
        .execute(
            r#"const svgs = [...document.querySelectorAll('figure svg')];
               return {
                 charts: svgs.length,
                 sized: svgs.filter(s => s.getBoundingClientRect().width > 100 && s.getBoundingClientRect().height > 100).length,
                 lines: [...document.querySelectorAll('polyline.series')].filter(p => p.getTotalLength() > 50).length,
                 bars: [...document.querySelectorAll('rect.bar')].filter(r => r.getBBox().height > 1).length,
                 limits: document.querySelectorAll('line[stroke-dasharray]').length,
               };"#,
            vec![],
        )
        .await
        .unwrap();
    let shot = client.screenshot().await.unwrap();
    std::fs::write(dir.path().join("report.png"), &shot).unwrap();
    client.close().await.unwrap();
    assert_eq!(drawn["charts"], 5, "{drawn}");
    assert_eq!(drawn["sized"], 5, "{drawn}");
    // Stages (at least chunk, render, throttle, deliver, reconcile), two senders, memory.
    assert!(drawn["lines"].as_u64().unwrap() >= 8, "{drawn}");
    // Five latency quantiles and two tenants' shares.
    assert_eq!(drawn["bars"], 7, "{drawn}");
    assert_eq!(drawn["limits"], 2, "limit and limit + burst: {drawn}");
    assert!(shot.len() > 20_000, "a screenshot of drawn charts, not a blank page ({} bytes)", shot.len());
}
