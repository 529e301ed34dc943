//! A hostile tenant against a real `herald serve`: each test is one way a tenant (or a racing
//! client) could read, change, slow down or starve another tenant, or raise its own limits —
//! and shows it cannot. The compare-and-set races are in `api/tests/races.rs` (against a store
//! that yields between steps); store-level guarantees in the store's own tests.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admins_cannot_raise_platform_limits() {
    let s = TestServer::start().await;
    let admin = s.token("platform_admin", None);
    let t = s.ok("POST", "/v1/tenants", &admin, Some(json!({"name": "limited", "rate_limit_per_s": 100}))).await;
    let id = t["id"].as_u64().unwrap();
    let path = format!("/v1/tenants/{id}");
    let ta = s.token("tenant_admin", Some(id));
    let original = json!({"rate_limit_per_s": 100, "burst": 10, "weight": 1});

    // The reported attack: unlimited rate, 1000x the fair share, an unbounded burst.
    let attack = json!({"weight": 1000, "rate_limit_per_s": 0, "burst": 4_000_000_000u64});
    let (status, body) = s.call("PATCH", &path, Some(&ta), Some(attack)).await;
    assert_eq!((status, code(&body)), (403, Some("forbidden_field")), "{body}");
    assert!(body["error"]["field"].is_string(), "the error names the field: {body}");
    for (field, value) in [
        ("weight", json!(2)),
        ("burst", json!(11)),
        ("rate_limit_per_s", json!(101)),
        ("rate_limit_per_s", Value::Null),
    ] {
        let (status, body) = s.call("PATCH", &path, Some(&ta), Some(json!({ field: value }))).await;
        assert_eq!((status, code(&body), body["error"]["field"].as_str()), (403, Some("forbidden_field"), Some(field)));
    }
    let shown = s.ok("GET", &path, &ta, None).await;
    for k in ["rate_limit_per_s", "burst", "weight"] {
        assert_eq!(shown[k], original[k], "nothing applied: {shown}");
    }
    // What is theirs they may change; unchanged limits are not a change.
    let renamed = s.ok("PATCH", &path, &ta, Some(json!({"name": "renamed", "weight": 1, "burst": 10}))).await;
    assert_eq!(renamed["name"], "renamed");

    // Bounds hold for everyone, platform admins included.
    for (patch, expected) in [
        (json!({"rate_limit_per_s": 0}), "invalid_rate_limit"),
        (json!({"burst": 1_001}), "invalid_burst"),
        (json!({"weight": 0}), "invalid_weight"),
        (json!({"weight": 1_001}), "invalid_weight"),
        (json!({"rate_limit_per_s": null, "burst": 100_001}), "invalid_burst"),
        (json!({"rate_limit_per_s": 50_000, "burst": 100_001}), "invalid_burst"),
        (json!({"name": null}), "null_not_allowed"),
        (json!({"burst": null}), "null_not_allowed"),
        (json!({"weight": null}), "null_not_allowed"),
    ] {
        let (status, body) = s.call("PATCH", &path, Some(&admin), Some(patch.clone())).await;
        assert_eq!((status, code(&body)), (422, Some(expected)), "{patch}: {body}");
    }
    let unlimited = s.ok("PATCH", &path, &admin, Some(json!({"rate_limit_per_s": null, "weight": 1000}))).await;
    assert_eq!((unlimited["rate_limit_per_s"].clone(), unlimited["weight"].clone()), (Value::Null, json!(1000)));

    // Creation follows the same bounds and changes nothing when refused.
    let before = s.ok("GET", "/v1/tenants", &admin, None).await["items"].as_array().unwrap().len();
    for bad in [
        json!({"name": "x", "rate_limit_per_s": 0}),
        json!({"name": "x", "burst": 5_000_000}),
        json!({"name": "x", "rate_limit_per_s": 10, "burst": 101}),
        json!({"name": "x", "weight": 5_000}),
    ] {
        assert_eq!(s.call("POST", "/v1/tenants", Some(&admin), Some(bad.clone())).await.0, 422, "{bad}");
    }
    assert_eq!(s.ok("GET", "/v1/tenants", &admin, None).await["items"].as_array().unwrap().len(), before);
    s.stop().await;
}

/// The message-log row of a campaign's only message.
async fn only_message(s: &TestServer, op: &str, campaign: u64) -> Value {
    let items = s.ok("GET", &format!("/v1/campaigns/{campaign}/messages"), op, None).await["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    items[0].clone()
}

async fn wait_counter(s: &TestServer, op: &str, campaign: u64, key: &str, n: u64) -> Value {
    eventually(&format!("campaign {campaign} {key} = {n}"), Duration::from_secs(30), || async {
        let p = s.ok("GET", &format!("/v1/campaigns/{campaign}/progress"), op, None).await;
        (p[key] == n).then_some(p)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_only_change_the_signing_tenants_messages() {
    let s = TestServer::start().await;
    let wamid = Arc::new(Mutex::new("wamid.A1".to_string()));
    let chosen = wamid.clone();
    let provider = FakeProvider::whatsapp(move || chosen.lock().unwrap().clone()).await;
    let (a, admin_a, op_a) = tenant_with_admin(&s, "victim").await;
    let (b, admin_b, op_b) = tenant_with_admin(&s, "hostile").await;
    put_whatsapp(&s, a, &admin_a, &provider.url(), "PN-A", 100, json!({})).await;
    put_whatsapp(&s, b, &admin_b, &provider.url(), "PN-B", 100, json!({"app_secret": "secret-b"})).await;

    // A's message is accepted as wamid.A1.
    let (template_a, audience_a) = (whatsapp_template(&s, &op_a).await, audience(&s, &op_a, 1, false).await);
    let campaign_a = send(&s, &op_a, template_a, audience_a).await;
    wait_counter(&s, &op_a, campaign_a, "sent", 1).await;
    let message_a = only_message(&s, &op_a, campaign_a).await;
    assert_eq!(message_a["provider_message_id"], "wamid.A1");

    // B signs, with its own app secret, a "failed" for A's provider id — without callback data,
    // and with callback data naming A's message. Both are accepted (the signature is B's) and
    // change nothing of A's.
    let failed = |extra: Value| {
        let mut status = json!({"id": "wamid.A1", "status": "failed", "timestamp": "1900000000",
            "recipient_id": "12025550000", "errors": [{"code": 131026, "title": "Message undeliverable"}]});
        status.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        whatsapp_webhook("PN-B", vec![status])
    };
    let callback = format!("h1.{a}.{campaign_a}.0.{}", message_a["message_id"].as_str().unwrap());
    assert_eq!(post_whatsapp_webhook(&s, "secret-b", failed(json!({}))).await, 200);
    assert_eq!(post_whatsapp_webhook(&s, "secret-b", failed(json!({"biz_opaque_callback_data": callback}))).await, 200);
    eventually("two unmatched receipts", Duration::from_secs(10), || async {
        (s.metric("herald_receipts_unmatched_total").await >= 2.0).then_some(())
    })
    .await;
    let p = s.ok("GET", &format!("/v1/campaigns/{campaign_a}/progress"), &op_a, None).await;
    assert_eq!((p["failed"].as_u64(), p["sent"].as_u64()), (Some(0), Some(1)), "B failed A's message: {p}");

    // B's own provider (a base_url B controls) answers with A's id: B's acceptance must not
    // take over A's index entry.
    let (template_b, audience_b) = (whatsapp_template(&s, &op_b).await, audience(&s, &op_b, 1, false).await);
    let campaign_b = send(&s, &op_b, template_b, audience_b).await;
    wait_counter(&s, &op_b, campaign_b, "sent", 1).await;
    assert_eq!(only_message(&s, &op_b, campaign_b).await["provider_message_id"], "wamid.A1");

    // A's real receipt, without callback data, reaches A's message (not B's).
    let delivered =
        json!({"id": "wamid.A1", "status": "delivered", "timestamp": "1900000001", "recipient_id": "12025550000"});
    assert_eq!(post_whatsapp_webhook(&s, "app-secret", whatsapp_webhook("PN-A", vec![delivered])).await, 200);
    wait_counter(&s, &op_a, campaign_a, "delivered", 1).await;
    let p = s.ok("GET", &format!("/v1/campaigns/{campaign_b}/progress"), &op_b, None).await;
    assert_eq!((p["sent"].as_u64(), p["delivered"].as_u64()), (Some(1), Some(0)), "{p}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_has_its_own_webhook_and_email_senders_but_phone_numbers_have_one_owner() {
    let s = TestServer::start().await;
    let (a, admin_a, _) = tenant_with_admin(&s, "a").await;
    let (b, admin_b, _) = tenant_with_admin(&s, "b").await;
    for (tenant, admin) in [(a, &admin_a), (b, &admin_b)] {
        let webhook = json!({"url": "http://127.0.0.1:9/hook", "signing_secret": "s"});
        s.ok("PUT", &format!("/v1/tenants/{tenant}/providers/webhook"), admin, Some(webhook)).await;
        let email = json!({"host": "127.0.0.1", "port": 2525, "tls": "none", "list_unsubscribe": "mailto:u@example.com",
            "senders": [{"from": "news@example.com"}]});
        s.ok("PUT", &format!("/v1/tenants/{tenant}/providers/email"), admin, Some(email)).await;
    }
    put_whatsapp(&s, a, &admin_a, "http://127.0.0.1:9", "PN-ONE", 80, json!({})).await;
    let wa = json!({"base_url": "http://127.0.0.1:9", "api_version": "v21.0", "access_token": "t", "app_secret": "x",
        "verify_token": "v", "senders": [{"phone_number_id": "PN-ONE"}]});
    let (status, body) = s.call("PUT", &format!("/v1/tenants/{b}/providers/whatsapp"), Some(&admin_b), Some(wa)).await;
    assert_eq!((status, code(&body)), (409, Some("sender_taken")), "{body}");
    assert_eq!(s.call("GET", &format!("/v1/tenants/{b}/providers/whatsapp"), Some(&admin_b), None).await.0, 404);
    let sms = |tenant: u64| {
        json!({"base_url": "http://127.0.0.1:9", "account_sid": format!("AC{tenant}"), "auth_token": "t",
            "senders": [{"from": "+12025550100"}]})
    };
    s.ok("PUT", &format!("/v1/tenants/{a}/providers/sms"), &admin_a, Some(sms(a))).await;
    let (status, _) = s.call("PUT", &format!("/v1/tenants/{b}/providers/sms"), Some(&admin_b), Some(sms(b))).await;
    assert_eq!(status, 409);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_revokes_it_at_once_and_purges_it_later() {
    let s = TestServer::start_with(|c| c.tenant_purge_after_s = 8).await;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let next = counter.clone();
    let provider =
        FakeProvider::whatsapp(move || format!("wamid.{}", next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)))
            .await;
    let (t, admin_t, op_t) = tenant_with_admin(&s, "leaving").await;
    put_whatsapp(&s, t, &admin_t, &provider.url(), "PN-DEL", 5, json!({})).await;
    let (template, aud) = (whatsapp_template(&s, &op_t).await, audience(&s, &op_t, 100, false).await);
    let campaign = send(&s, &op_t, template, aud).await;
    eventually("calls at 5/s", Duration::from_secs(20), || async { (provider.calls() >= 3).then_some(()) }).await;

    let admin = s.token("platform_admin", None);
    assert_eq!(s.call("DELETE", &format!("/v1/tenants/{t}"), Some(&admin), None).await.0, 204);
    // Its tokens stop working at once.
    for token in [&op_t, &admin_t, &s.token("viewer", Some(t))] {
        let (status, body) = s.call("GET", "/v1/campaigns", Some(token), None).await;
        assert_eq!((status, code(&body)), (401, Some("tenant_not_found")), "{body}");
    }
    assert_eq!(s.call("GET", &format!("/v1/tenants/{t}"), Some(&admin), None).await.0, 404);
    assert_eq!(s.call("DELETE", &format!("/v1/tenants/{t}"), Some(&admin), None).await.0, 404);
    let named = s
        .http
        .get(format!("{}/v1/campaigns", s.base))
        .bearer_auth(&admin)
        .header("x-herald-tenant", t.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 404);
    // The campaign was cancelled and its counters add up; and (below) its data is purged.
    let engine = s.server.as_ref().unwrap().engine.clone();
    let store = engine.lock().await.as_ref().unwrap().store.clone();
    let tenant = schemas::TenantId(t);
    eventually("the cancelled campaign settles", Duration::from_secs(20), || async {
        let c = store.get_campaign(tenant, schemas::CampaignId(campaign)).await.unwrap()?;
        let k = store.get_counters(tenant, c.id).await.unwrap()?;
        (c.status == storage::CampaignStatus::Cancelled && k.total == Some(100) && k.known() == 100).then_some(())
    })
    .await;
    // Its running campaign stops calling the provider (what was in flight may still land).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let calls = provider.calls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(provider.calls() <= calls + 1, "calls went on after the deletion: {calls} -> {}", provider.calls());
    // Its sender is free for another tenant.
    let (u, admin_u, _) = tenant_with_admin(&s, "next").await;
    put_whatsapp(&s, u, &admin_u, &provider.url(), "PN-DEL", 5, json!({})).await;

    eventually("the purge", Duration::from_secs(30), || async {
        let purged = matches!(store.get_tenant(tenant).await.unwrap()?.state, storage::TenantState::Purged { .. });
        let empty = store.list_campaigns(tenant).await.unwrap().is_empty()
            && store.list_templates(tenant).await.unwrap().is_empty()
            && store.list_audiences(tenant).await.unwrap().is_empty()
            && store.scan_messages(tenant, schemas::CampaignId(campaign), None, 1).await.unwrap().is_empty();
        (purged && empty).then_some(())
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_addresses_in_private_ranges_are_refused() {
    let s = TestServer::start_with(|c| c.allow_private_provider_addresses = false).await;
    let (t, admin, _) = tenant_with_admin(&s, "ssrf").await;
    let put = |name: &str, body: Value| {
        let path = format!("/v1/tenants/{t}/providers/{name}");
        let (s, admin) = (&s, &admin);
        async move { s.call("PUT", &path, Some(admin), Some(body)).await }
    };
    let whatsapp = |url: &str| {
        json!({"base_url": url, "api_version": "v21.0", "access_token": "t", "app_secret": "a", "verify_token": "v",
            "senders": [{"phone_number_id": "PN-SSRF"}]})
    };
    for url in [
        "http://127.0.0.1:9090",
        "http://localhost:9090",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8",
        "http://[::1]:80",
        "http://0.0.0.0",
        "http://[::ffff:127.0.0.1]",
    ] {
        let (status, body) = put("whatsapp", whatsapp(url)).await;
        assert_eq!((status, code(&body)), (422, Some("address_not_allowed")), "{url}: {body}");
    }
    let (status, body) = put("webhook", json!({"url": "http://192.168.1.20/hook", "signing_secret": "s"})).await;
    assert_eq!((status, code(&body)), (422, Some("address_not_allowed")), "{body}");
    let sms = json!({"base_url": "http://172.16.0.1", "account_sid": "AC1", "auth_token": "t", "senders": [{"from": "+12025550100"}]});
    assert_eq!(code(&put("sms", sms).await.1), Some("address_not_allowed"));
    for host in ["127.0.0.1", "localhost", "169.254.169.254"] {
        let email = json!({"host": host, "tls": "none", "list_unsubscribe": "mailto:u@example.com", "senders": [{"from": "a@example.com"}]});
        assert_eq!(code(&put("email", email).await.1), Some("address_not_allowed"), "{host}");
    }
    // Nothing was stored; a public address is fine.
    assert_eq!(s.ok("GET", &format!("/v1/tenants/{t}/providers"), &admin, None).await["items"], json!([]));
    assert_eq!(put("whatsapp", whatsapp("https://93.184.216.34")).await.0, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_bodies_are_never_echoed_to_tenants() {
    let s = TestServer::start().await;
    let long = format!("{}END", "x".repeat(1_000));
    let chatty = FakeProvider::start(move |_| {
        (400, json!({"error": {"code": 100, "message": long, "fbtrace_id": "SECRET-TRACE"}}).to_string())
    })
    .await;
    let html = FakeProvider::start(|_| (400, "<html>internal host 10.1.2.3 SECRET-PAGE</html>".into())).await;
    for (name, provider) in [("chatty", &chatty), ("html", &html)] {
        let (t, admin, op) = tenant_with_admin(&s, name).await;
        put_whatsapp(&s, t, &admin, &provider.url(), &format!("PN-{name}"), 100, json!({})).await;
        let (template, aud) = (whatsapp_template(&s, &op).await, audience(&s, &op, 1, false).await);
        let campaign = send(&s, &op, template, aud).await;
        wait_counter(&s, &op, campaign, "failed", 1).await;
        let error = only_message(&s, &op, campaign).await["error"].as_str().unwrap().to_string();
        let letter = s.ok("GET", "/v1/dlq", &op, None).await["items"][0]["reason"].as_str().unwrap().to_string();
        for text in [&error, &letter] {
            assert!(text.chars().count() <= 210, "{name}: {} characters", text.chars().count());
            assert!(!text.contains("SECRET") && !text.contains("END") && !text.contains("10.1.2.3"), "{name}: {text}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints_are_not_public() {
    let s = TestServer::start().await;
    let (status, _) = s.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 404, "metrics on the public listener");
    assert!(s.metrics().await.contains("herald_http_requests_total"));

    // The verification handshake finds the tenant by its verify token.
    let (a, admin_a, _) = tenant_with_admin(&s, "a").await;
    let (b, admin_b, _) = tenant_with_admin(&s, "b").await;
    put_whatsapp(&s, a, &admin_a, "http://127.0.0.1:9", "PN-VA", 80, json!({"verify_token": "token-a"})).await;
    put_whatsapp(&s, b, &admin_b, "http://127.0.0.1:9", "PN-VB", 80, json!({"verify_token": "token-b"})).await;
    let verify = |token: &str| {
        s.http
            .get(format!("{}/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=c42&hub.verify_token={token}", s.base))
            .send()
    };
    for token in ["token-a", "token-b"] {
        let r = verify(token).await.unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "c42".to_string()));
    }
    assert_eq!(verify("token-c").await.unwrap().status(), 403);
    assert_eq!(verify("").await.unwrap().status(), 403);
    assert_eq!(s.call("DELETE", &format!("/v1/tenants/{a}/providers/whatsapp"), Some(&admin_a), None).await.0, 204);
    assert_eq!(verify("token-a").await.unwrap().status(), 403, "a removed provider's token still verifies");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_short_secret_file_refuses_to_start() {
    for (file, content) in [("jwt-secret", ""), ("jwt-secret", "abc\n"), ("secrets-key", "")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), content).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir"])
            .arg(dir.path())
            .env_remove("HERALD_JWT_SECRET")
            .env_remove("HERALD_SECRETS_KEY")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("herald serve did not exit").unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file} {content:?}: {stderr}");
        assert!(stderr.contains(file), "the message names the file: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendering_and_recipients_are_bounded() {
    let s = TestServer::start().await;
    let (_, op) = tenant(&s, "big", None).await;
    let huge = "{{ name }}".repeat(7_000); // 70 KB
    let (status, body) =
        s.call("POST", "/v1/templates", Some(&op), Some(json!({"name": "t", "channel": "sms", "body": huge}))).await;
    assert_eq!((status, code(&body)), (422, Some("template_too_large")), "{body}");

    // Twenty copies of the name: 20 x 100 characters is over an SMS's 1,600.
    let body = "{{ name }}".repeat(20);
    let template = s.ok("POST", "/v1/templates", &op, Some(json!({"name": "t", "channel": "sms", "body": body}))).await;
    let audience = s.ok("POST", "/v1/audiences", &op, Some(json!({"name": "a"}))).await["id"].as_u64().unwrap();
    let csv = format!(
        "address,name\n+12025550101,Al\n+12025550102,{}\n+12025550103,{}\n",
        "n".repeat(100),
        "a".repeat(5_000)
    );
    let report: Value = s
        .http
        .post(format!("{}/v1/audiences/{audience}/import", s.base))
        .bearer_auth(&op)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((report["imported"].as_u64(), report["errors"][0]["line"].as_u64()), (Some(2), Some(4)), "{report}");
    let (status, body) = s
        .call(
            "POST",
            &format!("/v1/audiences/{audience}/recipients"),
            Some(&op),
            Some(json!([{"address": "+12025550104", "name": "b".repeat(5_000)}])),
        )
        .await;
    assert_eq!((status, body["rejected"].as_u64()), (200, Some(1)), "{body}");
    let campaign = send(&s, &op, template["id"].as_u64().unwrap(), audience).await;
    let p = s.wait_status(&op, campaign, "completed", Duration::from_secs(30)).await;
    assert_eq!((p["failed"].as_u64(), p["delivered"].as_u64()), (Some(1), Some(1)), "{p}");
    let failed = s.ok("GET", &format!("/v1/campaigns/{campaign}/messages?status=failed"), &op, None).await;
    assert!(failed["items"][0]["error"].as_str().unwrap().starts_with("rendered_too_large"), "{failed}");
    s.stop().await;
}

async fn import(s: &TestServer, op: &str, audience: u64, csv: String) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}/v1/audiences/{audience}/import", s.base))
        .bearer_auth(op)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_errors_are_honest() {
    let s = TestServer::start().await;
    let (_, op) = tenant(&s, "csv", None).await;
    let audience = s.ok("POST", "/v1/audiences", &op, Some(json!({"name": "a"}))).await["id"].as_u64().unwrap();
    let (status, report) =
        import(&s, &op, audience, "address,name\n\n\n+12025550101,A\nbad,B\n\n+12025550102,C\nworse,D\n".into()).await;
    assert_eq!(status, 200);
    let lines: Vec<u64> = report["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!((report["imported"].as_u64(), lines), (Some(2), vec![5, 8]), "{report}");

    // A fatal error mid-stream says how many rows were committed before it.
    let mut csv = String::from("address,name\n");
    for i in 0..12_000 {
        csv.push_str(&format!("+1303{:07},n\n", 5_550_000 + i));
    }
    csv.push_str(&format!("+13035559999,{}\n", "z".repeat(1 << 21)));
    let (status, body) = import(&s, &op, audience, csv).await;
    assert_eq!((status, code(&body)), (422, Some("row_too_large")), "{body}");
    let committed = body["error"]["imported_before_error"].as_u64().expect("imported_before_error");
    let count = s.ok("GET", &format!("/v1/audiences/{audience}"), &op, None).await["recipient_count"].as_u64().unwrap();
    assert_eq!(count, 2 + committed, "the error must say what was committed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_never_fail_on_odd_input() {
    let s = TestServer::start().await;
    let (t, admin, _) = tenant_with_admin(&s, "hooks").await;
    put_whatsapp(&s, t, &admin, "http://127.0.0.1:9", "PN-ODD", 80, json!({})).await;
    // A timestamp whose milliseconds overflow u64.
    let status = json!({"id": "wamid.X", "status": "delivered", "timestamp": "18446744073709552", "recipient_id": "1"});
    assert_eq!(post_whatsapp_webhook(&s, "app-secret", whatsapp_webhook("PN-ODD", vec![status.clone()])).await, 200);
    // A phone number id nobody owns: 200 (Meta would retry and disable the subscription), dropped, counted.
    assert_eq!(post_whatsapp_webhook(&s, "whatever", whatsapp_webhook("PN-NOBODY", vec![status])).await, 200);
    assert!(s.metric("herald_webhooks_unknown_sender_total").await >= 1.0);
    s.stop().await;
}
