//! Real providers through the whole pipeline: the failure matrix (each WhatsApp error code of
//! the reference table → its documented outcome), SMS with signed status callbacks, email
//! into an SMTP server started here, the signed webhook provider, and the messaging-tier
//! budget (`waiting_for_quota`, no overshoot).

mod common;

use common::*;
use herald::mock_provider::{calls, MockArgs, MockProvider};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn mock(s: &TestServer, inject: Vec<(i64, f64)>, mps: u32, log: Option<std::path::PathBuf>) -> MockProvider {
    MockProvider::start(MockArgs {
        webhook_url: format!("{}/webhooks/whatsapp", s.base),
        app_secret: "app-secret".into(),
        mps,
        latency_ms: 2,
        inject,
        calls_log: log,
        ..MockArgs::default()
    })
    .await
    .unwrap()
}

/// What one drill ended with.
struct Drill {
    tenant: u64,
    campaign: u64,
    progress: Value,
    dlq: Vec<Value>,
    mock: MockProvider,
}

/// One row of the failure matrix: inject `code` into a share of calls, run a campaign to the end.
async fn drill(s: &TestServer, code: i64, share: f64, n: usize) -> Drill {
    let mock = mock(s, vec![(code, share)], 1_000, None).await;
    let (tenant, admin, op) = tenant_with_admin(s, &format!("drill-{code}")).await;
    let sender = format!("PN-{code}");
    put_whatsapp(s, tenant, &admin, &format!("http://{}", mock.addr), &sender, 100, json!({})).await;
    let template = whatsapp_template(s, &op).await;
    let audience = audience(s, &op, n, false).await;
    let campaign = send(s, &op, template, audience).await;
    let progress = s.wait_status(&op, campaign, "completed", Duration::from_secs(180)).await;
    let dlq = s.ok("GET", "/v1/dlq", &op, None).await["items"].as_array().unwrap().clone();
    Drill { tenant, campaign, progress, dlq, mock }
}

fn count(p: &Value, keys: &[&str]) -> u64 {
    keys.iter().map(|k| p[k].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_matrix_each_code_has_its_documented_outcome() {
    let s = TestServer::start().await;
    let ok = ["delivered", "read"];

    // Permanent: failed with the code, kept in the DLQ.
    for code in [131026, 132000, 132001] {
        let d = drill(&s, code, 1.0, 3).await;
        assert_eq!(d.progress["failed"], 3, "{code}: {}", d.progress);
        assert_eq!(d.dlq.len(), 3);
        assert!(
            d.dlq.iter().all(|l| l["reason"].as_str().unwrap().starts_with(&code.to_string())),
            "{code}: {:?}",
            d.dlq
        );
    }

    // 131049: failed, not redrivable for ≥ 24 h.
    let d = drill(&s, 131049, 1.0, 3).await;
    assert_eq!(d.progress["failed"], 3, "{}", d.progress);
    let day_from_now = schemas::now_ms() + 23 * 3_600_000;
    assert!(d.dlq.iter().all(|l| l["not_before_ms"].as_u64().unwrap() > day_from_now), "{:?}", d.dlq);
    let op = s.token("operator", Some(d.tenant));
    let redrive = s.ok("POST", "/v1/dlq/redrive", &op, Some(json!({"campaign_id": d.campaign}))).await;
    assert_eq!((redrive["redriven"].as_u64(), redrive["held_until_later"].as_u64()), (Some(0), Some(3)), "{redrive}");

    // 368: the sender is stopped (alert metric) and what it would have sent fails.
    let d = drill(&s, 368, 1.0, 3).await;
    assert_eq!(d.progress["failed"], 3, "{}", d.progress);
    let stopped = "provider=\"whatsapp\",sender=\"PN-368\"} 1";
    assert!(s.metrics_when(|m| m.contains(stopped)).await.contains(stopped), "sender not reported stopped");

    // Pace (AIMD), quality slow-down, recipient back-off, upgrade in progress, 5xx: all
    // delivered in the end, none lost, none failed.
    let mut drills = Vec::new();
    let server = &s;
    for (code, share, n) in [
        (130429, 0.3, 30),
        (80007, 0.3, 30),
        (4, 0.3, 30),
        (131048, 0.3, 30),
        (131056, 0.2, 10),
        (131057, 0.3, 10),
        (503, 0.3, 10),
    ] {
        drills.push(async move { (code, n, drill(server, code, share, n).await) });
    }
    for (code, n, d) in futures::future::join_all(drills).await {
        assert_eq!(count(&d.progress, &ok), n as u64, "{code}: {}", d.progress);
        let refused = d.mock.stats().refused.get(&code.to_string()).copied().unwrap_or(0);
        assert!(refused > 0, "{code} was never injected");
    }
    let signalled = |m: &str, code: u32| {
        m.lines()
            .find(|l| l.starts_with("herald_sender_pace_signals_total{tenant=") && l.contains(&format!("PN-{code}\"")))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
            > 0
    };
    let m = s.metrics_when(|m| [130429, 80007, 4, 131048].iter().all(|c| signalled(m, *c))).await;
    let pace_lines: Vec<&str> = m.lines().filter(|l| l.starts_with("herald_sender_pace_signals_total")).collect();
    for code in [130429, 80007, 4, 131048] {
        assert!(signalled(&m, code), "{code}: no pace signal in {pace_lines:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_campaign_reconciles_from_signed_status_callbacks() {
    let s = TestServer::start().await;
    let m = MockProvider::start(MockArgs { failure_rate: 0.05, mps: 1_000, latency_ms: 2, ..MockArgs::default() })
        .await
        .unwrap();
    let (tenant, admin, op) = tenant_with_admin(&s, "sms").await;
    let body = json!({"base_url": format!("http://{}", m.addr), "account_sid": "AC123", "auth_token": "sms-token",
        "status_callback_url": s.base, "senders": [{"from": "+12025550999", "rate_limit_per_s": 300}]});
    s.ok("PUT", &format!("/v1/tenants/{tenant}/providers/sms"), &admin, Some(body)).await;
    let template =
        s.ok("POST", "/v1/templates", &op, Some(json!({"name": "s", "channel": "sms", "body": "Hi {{ name }}"}))).await;
    let audience = audience(&s, &op, 200, false).await;
    let campaign = send(&s, &op, template["id"].as_u64().unwrap(), audience).await;
    let p = s.wait_status(&op, campaign, "completed", Duration::from_secs(120)).await;
    assert_eq!(count(&p, &["delivered", "read", "failed"]), 200, "{p}");
    assert!(p["failed"].as_u64().unwrap() > 0, "undelivered callbacks are failures: {p}");
    assert_eq!((m.stats().accepted, m.stats().duplicate_message_ids), (200, 0));

    // A callback with a bad signature changes nothing.
    let forged = s
        .http
        .post(format!("{}/webhooks/sms/{tenant}?cb=h1.{tenant}.{campaign}.0.00000000000000000000000000000001", s.base))
        .header("x-twilio-signature", "AAAA")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM1&MessageStatus=delivered")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    m.stop();
    s.stop().await;
}

/// A minimal SMTP server: accepts every message and keeps its raw DATA.
async fn smtp_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let store = inbox.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 test ESMTP\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test\r\n250 8BITMIME\r\n",
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                        "DATA" => {
                            let _ = write.write_all(b"354 go ahead\r\n").await;
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            store.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"502 unknown\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, inbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_campaign_lands_in_the_smtp_server() {
    let s = TestServer::start().await;
    let (port, inbox) = smtp_server().await;
    let (tenant, admin, op) = tenant_with_admin(&s, "mail").await;
    let body = json!({"host": "127.0.0.1", "port": port, "tls": "none",
        "list_unsubscribe": "mailto:unsubscribe@example.com?subject={{ address }}",
        "senders": [{"from": "news@example.com", "rate_limit_per_s": 2000}]});
    s.ok("PUT", &format!("/v1/tenants/{tenant}/providers/email"), &admin, Some(body)).await;
    let template = s
        .ok("POST", "/v1/templates", &op, Some(json!({"name": "e", "channel": "email", "subject": "Hello {{ name }}", "body": "Hi {{ name }}, news inside."})))
        .await;
    let audience = audience(&s, &op, 1_000, true).await;
    let campaign = send(&s, &op, template["id"].as_u64().unwrap(), audience).await;
    let p = s.wait_status(&op, campaign, "completed", Duration::from_secs(180)).await;
    assert_eq!(p["delivered"], 1_000, "{p}");

    let mail = inbox.lock().unwrap().clone();
    assert_eq!(mail.len(), 1_000);
    for i in [0, 499, 999] {
        let m = mail
            .iter()
            .find(|m| m.contains(&format!("To: member-{i}@example.com")))
            .unwrap_or_else(|| panic!("no mail for {i}"));
        assert!(m.contains(&format!("Subject: Hello Member {i}\n")), "{m}");
        assert!(m.contains(&format!("Hi Member {i}, news inside.")), "{m}");
        assert!(
            m.contains(&format!("List-Unsubscribe: <mailto:unsubscribe@example.com?subject=member-{i}@example.com>")),
            "{m}"
        );
        assert!(m.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{m}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_provider_posts_signed_messages() {
    use axum::{body::Bytes, http::HeaderMap, routing::post, Router};
    let s = TestServer::start().await;
    let received = Arc::new(Mutex::new(Vec::<(bool, Value)>::new()));
    let sink = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let signature = headers.get("x-herald-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let valid = signature == schemas::helpers::sign_sha256_hex(b"hook-secret", &body);
                sink.lock().unwrap().push((valid, serde_json::from_slice(&body).unwrap()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (tenant, admin, op) = tenant_with_admin(&s, "hook").await;
    s.ok(
        "PUT",
        &format!("/v1/tenants/{tenant}/providers/webhook"),
        &admin,
        Some(json!({"url": url, "signing_secret": "hook-secret"})),
    )
    .await;
    let template =
        s.ok("POST", "/v1/templates", &op, Some(json!({"name": "s", "channel": "sms", "body": "Hi {{ name }}"}))).await;
    let audience = audience(&s, &op, 50, false).await;
    let campaign = send(&s, &op, template["id"].as_u64().unwrap(), audience).await;
    let p = s.wait_status(&op, campaign, "completed", Duration::from_secs(60)).await;
    assert_eq!(p["delivered"], 50, "{p}");
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|(valid, _)| *valid), "unsigned or badly signed deliveries");
    assert!(got.iter().any(|(_, b)| b["content"]["Sms"]["text"] == "Hi Member 7"), "{:?}", got[0].1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_tier_budget_waits_instead_of_failing_or_overshooting() {
    let s = TestServer::start_with(|c| c.quota_window_s = 6).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let m = mock(&s, vec![], 1_000, Some(log.clone())).await;
    let (tenant, admin, op) = tenant_with_admin(&s, "tier").await;
    put_whatsapp(&s, tenant, &admin, &format!("http://{}", m.addr), "PN-T", 500, json!({"daily_unique_limit": 100}))
        .await;
    let template = whatsapp_template(&s, &op).await;
    let audience = audience(&s, &op, 250, false).await;
    let campaign = send(&s, &op, template, audience).await;
    let waiting = s.wait_status(&op, campaign, "waiting_for_quota", Duration::from_secs(30)).await;
    assert!(waiting["resume_at_ms"].as_u64().unwrap() > schemas::now_ms(), "{waiting}");
    let p = s.wait_status(&op, campaign, "completed", Duration::from_secs(120)).await;
    assert_eq!(count(&p, &["delivered", "read"]), 250, "{p}");
    assert_eq!((p["failed"].as_u64(), p["dead_lettered"].as_u64()), (Some(0), Some(0)));
    let summary = calls::analyze(&log, 0).unwrap();
    let mut times: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["ts_ms"].as_u64().unwrap())
        .collect();
    times.sort_unstable();
    assert_eq!(summary.accepted, 250);
    let busiest = calls::max_window(&times, 6_000);
    assert!(busiest <= 100, "{busiest} messages within one 6 s window, limit 100");
    m.stop();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_calls_that_went_through_are_not_sent_twice() {
    // The mock accepts every call but holds back 30% of the answers past Herald's timeout: a
    // blind retry would send those messages twice. Herald waits for a receipt first.
    let s = TestServer::start_with(|c| {
        c.provider_timeout_ms = 500;
        c.receipt_grace_ms = 3_000;
    })
    .await;
    let m = MockProvider::start(MockArgs {
        webhook_url: format!("{}/webhooks/whatsapp", s.base),
        app_secret: "app-secret".into(),
        mps: 1_000,
        latency_ms: 2,
        stall_share: 0.3,
        stall_ms: 2_000,
        // No pair-rate refusal to hide a second send of the same message.
        pair_interval_s: 0.0,
        ..MockArgs::default()
    })
    .await
    .unwrap();
    let (tenant, admin, op) = tenant_with_admin(&s, "stall").await;
    put_whatsapp(&s, tenant, &admin, &format!("http://{}", m.addr), "PN-S", 100, json!({})).await;
    let template = whatsapp_template(&s, &op).await;
    let audience = audience(&s, &op, 60, false).await;
    let campaign = send(&s, &op, template, audience).await;
    let p = s.wait_status(&op, campaign, "completed", Duration::from_secs(120)).await;
    assert_eq!(count(&p, &["delivered", "read"]), 60, "{p}");
    // Receipts complete the campaign before the timed-out calls come up for retry: wait until
    // deliver has dealt with every one of them (its claims settle).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = m.stats();
    assert!(stats.stalled > 0, "no call was held back: {stats:?}");
    assert_eq!((stats.accepted, stats.duplicate_message_ids), (60, 0), "{stats:?}");
    m.stop();
    s.stop().await;
}
