//! End to end over real HTTP: tenant → template → audience → 100k-row CSV import (~1% bad
//! rows) → campaign → send → completed with counters adding up → log queries by status and
//! cursor; then pause / resume / cancel checked against the simulator's own record of calls.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_send_complete_and_query() {
    let s = TestServer::start().await;
    let (_, op) = tenant(&s, "acme", None).await;
    let t =
        s.ok("POST", "/v1/templates", &op, Some(json!({"name": "w", "channel": "sms", "body": "Hi {{ name }}"}))).await;
    let a = s.ok("POST", "/v1/audiences", &op, Some(json!({"name": "big"}))).await;
    let aid = a["id"].as_u64().unwrap();

    // 100,000 data rows; every 97th is malformed; two duplicates.
    let mut csv = String::from("address,name,plan\n");
    let mut bad_lines = Vec::new();
    for i in 0..100_000u64 {
        if i % 97 == 13 {
            csv.push_str(&format!("not-a-number-{i},X,basic\n"));
            bad_lines.push(i + 2);
        } else {
            csv.push_str(&format!("+1202{:07},Member {i},pro\n", 5_000_000 + i));
        }
    }
    csv.push_str("+12025000000,Dup,pro\n+12025000001,Dup,pro\n");
    let resp = s
        .http
        .post(format!("{}/v1/audiences/{aid}/import", s.base))
        .bearer_auth(&op)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    let bad = bad_lines.len() as u64;
    assert_eq!(report["rejected"], bad, "{report}");
    assert_eq!(report["duplicates"], 2);
    assert_eq!(report["imported"], 100_000 - bad);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 100, "first 100 errors are reported");
    assert_eq!(errors[0]["line"], bad_lines[0], "errors carry their line number");
    let total = 100_000 - bad;
    assert_eq!(s.ok("GET", &format!("/v1/audiences/{aid}"), &op, None).await["recipient_count"], total);

    let c = s
        .ok("POST", "/v1/campaigns", &op, Some(json!({"name": "launch", "template_id": t["id"], "audience_id": aid})))
        .await;
    let cid = c["id"].as_u64().unwrap();
    let (status, _) = s.call("POST", &format!("/v1/campaigns/{cid}/send"), Some(&op), None).await;
    assert_eq!(status, 202);
    let p = s.wait_status(&op, cid, "completed", Duration::from_secs(240)).await;
    let sum: u64 = ["sent", "delivered", "read", "failed", "suppressed", "cancelled", "dead_lettered", "pending"]
        .iter()
        .map(|k| p[k].as_u64().unwrap())
        .sum();
    assert_eq!(p["total"], total);
    assert_eq!(sum, total, "counters add up to the audience: {p}");
    assert_eq!(p["delivered"], total);

    // Log: filter by status and walk every page with the cursor: each message exactly once.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/campaigns/{cid}/messages?status=delivered&limit=1000&cursor={c}"),
            None => format!("/v1/campaigns/{cid}/messages?status=delivered&limit=1000"),
        };
        let page = s.ok("GET", &q, &op, None).await;
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["status"], "delivered");
            assert!(seen.insert(item["message_id"].as_str().unwrap().to_string()), "a message appeared twice");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, total);
    let none = s.ok("GET", &format!("/v1/campaigns/{cid}/messages?status=failed"), &op, None).await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let one = s.ok("GET", &format!("/v1/campaigns/{cid}/messages?address=%2B12025000000"), &op, None).await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);

    let metrics = s.metrics_when(|m| m.contains("herald_stage_records_in_total")).await;
    assert!(
        metrics.contains(&format!("herald_tenant_messages{{tenant=\"1\",status=\"delivered\"}} {total}")),
        "{metrics}"
    );
    assert!(metrics.contains("herald_stage_lag_records{stage=\"deliver\"} 0"), "{metrics}");
    assert!(metrics.contains("herald_http_request_duration_seconds_count"));
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("herald_stage_records_in_total{stage=\"deliver\"}") && !l.ends_with(" 0")));

    let accepted = s.accepted_per_message();
    assert_eq!(accepted.len() as u64, total, "every recipient reached the provider");
    assert!(accepted.values().all(|n| *n == 1), "no duplicate provider accepts");
    let (status, body) = s.call("POST", &format!("/v1/campaigns/{cid}/pause"), Some(&op), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("illegal_transition")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_cancel_never_skip_or_duplicate() {
    let s = TestServer::start().await;
    // 400 messages/s so a 4,000-recipient campaign takes ~10 s and can be paused mid-way.
    let (_, op) = tenant(&s, "paced", Some(400)).await;
    let cid = campaign(&s, &op, 4_000, 0).await;
    s.ok("POST", &format!("/v1/campaigns/{cid}/send"), &op, None).await;
    while s.accepted_times(cid).len() < 800 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused_at = schemas::now_ms();
    let (status, _) = s.call("POST", &format!("/v1/campaigns/{cid}/pause"), Some(&op), None).await;
    assert_eq!(status, 202);
    assert_eq!(s.call("POST", &format!("/v1/campaigns/{cid}/pause"), Some(&op), None).await.0, 409);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = s.accepted_times(cid);
    let late: Vec<_> = calls.iter().filter(|t| **t > paused_at + 1000).collect();
    assert!(late.is_empty(), "{} provider calls more than 1 s after pause", late.len());
    assert_eq!(s.ok("GET", &format!("/v1/campaigns/{cid}/progress"), &op, None).await["status"], "paused");
    s.ok("POST", &format!("/v1/campaigns/{cid}/resume"), &op, None).await;
    let p = s.wait_status(&op, cid, "completed", Duration::from_secs(120)).await;
    assert_eq!(p["delivered"], 4_000, "{p}");

    // Cancel mid-way: the rest are cancelled, nothing is sent twice, counters add up.
    let cid2 = campaign(&s, &op, 4_000, 10_000).await;
    s.ok("POST", &format!("/v1/campaigns/{cid2}/send"), &op, None).await;
    while s.accepted_times(cid2).len() < 500 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.ok("POST", &format!("/v1/campaigns/{cid2}/cancel"), &op, None).await;
    let p = s.wait_status_done(&op, cid2).await;
    let cancelled = p["cancelled"].as_u64().unwrap();
    let delivered = p["delivered"].as_u64().unwrap();
    assert!(cancelled > 1_000, "most of the campaign was cancelled: {p}");
    assert_eq!(cancelled + delivered, 4_000, "{p}");
    assert_eq!(s.accepted_times(cid2).len() as u64, delivered, "every delivered message was sent once");
    assert!(s.accepted_per_message().values().all(|n| *n == 1), "no duplicate provider accepts");
    assert_eq!(s.call("POST", &format!("/v1/campaigns/{cid2}/resume"), Some(&op), None).await.0, 409);
    s.stop().await;
}

trait WaitDone {
    async fn wait_status_done(&self, op: &str, cid: u64) -> Value;
}

impl WaitDone for TestServer {
    /// A cancelled campaign is done when every message is terminal (pending and sent are 0).
    async fn wait_status_done(&self, op: &str, cid: u64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let p = self.ok("GET", &format!("/v1/campaigns/{cid}/progress"), op, None).await;
            if p["status"] == "cancelled" && p["pending"] == 0 && p["sent"] == 0 && p["total"].as_u64() > Some(0) {
                let total = p["total"].as_u64().unwrap();
                let terminal =
                    p["delivered"].as_u64().unwrap() + p["cancelled"].as_u64().unwrap() + p["failed"].as_u64().unwrap();
                if terminal == total {
                    return p;
                }
            }
            assert!(std::time::Instant::now() < deadline, "campaign {cid} did not finish: {p}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_once() {
    let s = TestServer::start_with(|c| c.simulator.permanent_failure_rate = 0.5).await;
    let (_, op) = tenant(&s, "flaky", None).await;
    let cid = campaign(&s, &op, 400, 0).await;
    s.ok("POST", &format!("/v1/campaigns/{cid}/send"), &op, None).await;
    let before = s.wait_status(&op, cid, "completed", Duration::from_secs(60)).await;
    let failed = before["failed"].as_u64().unwrap();
    assert!(failed > 100 && failed < 300, "about half fail permanently: {before}");

    let mut listed = 0;
    let mut cursor = String::new();
    loop {
        let page = s.ok("GET", &format!("/v1/dlq?campaign_id={cid}&limit=50{cursor}"), &op, None).await;
        for item in page["items"].as_array().unwrap() {
            assert!(item["reason"].as_str().unwrap().starts_with("131026"), "{item}");
        }
        listed += page["items"].as_array().unwrap().len() as u64;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(listed, failed, "every permanent failure is in the DLQ with its reason");
    // Filtered by code on the server: every letter carries 131026, none carries 131049.
    let by_code = s.ok("GET", &format!("/v1/dlq?campaign_id={cid}&code=131026&limit=1000"), &op, None).await;
    let items = by_code["items"].as_array().unwrap();
    assert_eq!(items.len() as u64, failed, "{by_code}");
    assert!(items.iter().all(|i| i["code"] == "131026"), "{by_code}");
    let other = s.ok("GET", "/v1/dlq?code=131049&limit=1000", &op, None).await;
    assert_eq!((other["items"].as_array().unwrap().len(), &other["next_cursor"]), (0, &Value::Null), "{other}");

    let (status, body) = s.call("POST", "/v1/dlq/redrive", Some(&op), Some(json!({"campaign_id": cid}))).await;
    assert_eq!((status, body["redriven"].as_u64()), (202, Some(failed)));
    // The redriven messages are sent again; about half of them fail again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let p = s.ok("GET", &format!("/v1/campaigns/{cid}/progress"), &op, None).await;
        let left = s.ok("GET", &format!("/v1/dlq?campaign_id={cid}&limit=1000"), &op, None).await;
        let dlq = left["items"].as_array().unwrap().len() as u64;
        if p["status"] == "completed" && p["failed"].as_u64() == Some(dlq) && dlq < failed {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "redrive did not settle: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after["failed"].as_u64().unwrap() + after["delivered"].as_u64().unwrap(), 400, "{after}");
    assert!(after["delivered"].as_u64() > before["delivered"].as_u64());
    assert!(s.accepted_per_message().values().all(|n| *n == 1), "no message accepted twice");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_send_waits_for_its_time() {
    let s = TestServer::start().await;
    let (_, op) = tenant(&s, "sched", None).await;
    let draft = campaign(&s, &op, 50, 0).await;
    let c = s.ok("GET", &format!("/v1/campaigns/{draft}"), &op, None).await;
    let at = schemas::now_ms() + 2_000;
    let body =
        json!({"name": "later", "template_id": c["template_id"], "audience_id": c["audience_id"], "scheduled_at": at});
    let scheduled = s.ok("POST", "/v1/campaigns", &op, Some(body)).await;
    let sid = scheduled["id"].as_u64().unwrap();
    assert_eq!(scheduled["status"], "draft", "nothing is sent before /send");
    let sent = s.ok("POST", &format!("/v1/campaigns/{sid}/send"), &op, None).await;
    assert_eq!(sent["status"], "scheduled");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(s.accepted_times(sid).is_empty(), "sent before its time");
    s.wait_status(&op, sid, "completed", Duration::from_secs(30)).await;
    assert!(s.accepted_times(sid).iter().all(|t| *t >= at), "every call after scheduled_at");
    s.stop().await;
}
