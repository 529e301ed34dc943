//! Issue 4 acceptance against a real `herald mock-provider` process (WhatsApp Cloud API over
//! HTTP, signed status webhooks), with exactly the flags the issue names:
//! - 6,000 recipients, sender and mock at 80/s: no 1-second window above 80 + burst, mean
//!   ≥ 79/s, no message id twice, completed with delivered + read + failed = 6,000;
//! - mock at 50/s, Herald at 80/s: after the first 10 s under 2% of calls get 130429 (AIMD),
//!   nothing lost;
//! - the provider down for 30 s mid-campaign: completes afterwards, 0 lost, 0 duplicates.

mod common;

use common::*;
use herald::mock_provider::calls::{analyze, CallsSummary};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Herald with a WhatsApp tenant whose sender `PN-A` is paced at `rate`, and a campaign of
/// `n` recipients ready to send: (server, operator token, template, audience).
async fn setup(n: usize, mock_port: u16, rate: u32) -> (TestServer, String, u64, u64) {
    let s = TestServer::start().await;
    let (tenant, admin, op) = tenant_with_admin(&s, "wa").await;
    put_whatsapp(&s, tenant, &admin, &format!("http://127.0.0.1:{mock_port}"), "PN-A", rate, json!({})).await;
    let template = whatsapp_template(&s, &op).await;
    let audience = audience(&s, &op, n, false).await;
    (s, op, template, audience)
}

fn summary(log: &Path, from_ms: u64) -> CallsSummary {
    analyze(log, from_ms).unwrap()
}

/// delivered + read + failed, and the progress body.
async fn finals(s: &TestServer, op: &str, campaign: u64) -> (u64, serde_json::Value) {
    let p = s.ok("GET", &format!("/v1/campaigns/{campaign}/progress"), op, None).await;
    let n = ["delivered", "read", "failed"].iter().map(|k| p[k].as_u64().unwrap()).sum();
    (n, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_at_80_per_second_completes_from_signed_webhooks() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let (s, op, template, audience) = setup(6_000, port, 80).await;
    let _mock = MockProcess::start(
        port,
        &format!("{}/webhooks/whatsapp", s.base),
        &log,
        &["--mps", "80", "--failure-rate", "0.02"],
    )
    .await;
    let campaign = send(&s, &op, template, audience).await;
    s.wait_status(&op, campaign, "completed", Duration::from_secs(300)).await;
    let (n, p) = finals(&s, &op, campaign).await;
    assert_eq!(n, 6_000, "delivered + read + failed: {p}");
    assert!(p["failed"].as_u64().unwrap() > 0 && p["read"].as_u64().unwrap() > 0, "{p}");

    let calls = summary(&log, 0);
    let a = &calls.per_sender["PN-A"];
    eprintln!("80/s: {a:?}");
    assert!(a.max_1s_window <= 88, "max calls in a 1 s window {} > 80 + burst 8", a.max_1s_window);
    assert!(a.mean_rate >= 79.0, "mean rate {:.2}/s", a.mean_rate);
    assert_eq!(calls.duplicate_message_ids, 0);
    assert_eq!(calls.accepted, 6_000);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_at_50_herald_at_80_adapts_and_loses_nothing() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let (s, op, template, audience) = setup(3_000, port, 80).await;
    let _mock = MockProcess::start(port, &format!("{}/webhooks/whatsapp", s.base), &log, &["--mps", "50"]).await;
    let campaign = send(&s, &op, template, audience).await;
    s.wait_status(&op, campaign, "completed", Duration::from_secs(300)).await;
    let (n, p) = finals(&s, &op, campaign).await;
    assert_eq!(n, 3_000, "{p}");
    assert_eq!(p["dead_lettered"], 0, "{p}");

    let first = summary(&log, 0).per_sender["PN-A"].first_ms;
    let after = summary(&log, first + 10_000);
    let a = &after.per_sender["PN-A"];
    let throttled = a.refused.get(&130429).copied().unwrap_or(0);
    eprintln!("50/s: after 10 s {} calls, {throttled} refused 130429, mean {:.1}/s", a.calls, a.mean_rate);
    assert!((throttled as f64) < 0.02 * a.calls as f64, "{throttled} of {} calls got 130429 after 10 s", a.calls);
    let all = summary(&log, 0);
    assert_eq!((all.accepted, all.duplicate_message_ids), (3_000, 0));
    // The AIMD state is exported.
    let exported = "herald_sender_pace_signals_total{tenant=\"1\",provider=\"whatsapp\",sender=\"PN-A\"}";
    let metrics = s.metrics_when(|m| m.contains(exported)).await;
    assert!(metrics.contains(exported), "{metrics}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_for_30_seconds_mid_campaign() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let (s, op, template, audience) = setup(3_000, port, 100).await;
    let webhook = format!("{}/webhooks/whatsapp", s.base);
    let mut mock = MockProcess::start(port, &webhook, &log, &["--mps", "200"]).await;
    let campaign = send(&s, &op, template, audience).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    mock.kill();
    let down_at = schemas::now_ms();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let accepted_while_down = summary(&log, down_at).accepted;
    let _mock = MockProcess::start(mock.port, &webhook, &log, &["--mps", "200"]).await;
    s.wait_status(&op, campaign, "completed", Duration::from_secs(400)).await;
    let (n, p) = finals(&s, &op, campaign).await;
    assert_eq!(accepted_while_down, 0);
    assert_eq!(n, 3_000, "{p}");
    assert_eq!(p["dead_lettered"], 0, "{p}");
    let calls = summary(&log, 0);
    assert_eq!((calls.accepted, calls.duplicate_message_ids), (3_000, 0), "down at {down_at} ms: {calls:?}");
    s.stop().await;
}
