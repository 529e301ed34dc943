//! Security and webhook semantics over real HTTP: bad tokens are 401, roles are enforced (403),
//! another tenant's objects are 404; webhooks with a bad signature change nothing; the same
//! webhook delivered three times and statuses out of order give the same state as once in order.

mod common;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_tenant_isolation() {
    let s = TestServer::start().await;
    let (a, op_a) = tenant(&s, "a", None).await;
    let (_b, op_b) = tenant(&s, "b", None).await;
    let cid = campaign(&s, &op_a, 10, 0).await;
    let path = format!("/v1/campaigns/{cid}");

    // 401s: no token, expired, wrong key, alg none, garbage.
    assert_eq!(s.call("GET", &path, None, None).await.0, 401);
    let exp_past = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 600;
    let expired =
        s.config.auth().unwrap().mint(&api::Claims::new("x", Some(a), api::Role::Operator, exp_past)).unwrap();
    assert_eq!(s.call("GET", &path, Some(&expired), None).await.0, 401);
    let wrong_key = api::Auth::hs256(b"another-secret-entirely")
        .mint(&api::Claims::new("x", Some(a), api::Role::Operator, exp_past + 7200))
        .unwrap();
    assert_eq!(s.call("GET", &path, Some(&wrong_key), None).await.0, 401);
    let payload = op_a.split('.').nth(1).unwrap();
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let (status, body) = s.call("GET", &path, Some(&alg_none), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));

    // 403: a viewer cannot send; an operator cannot create tenants.
    let viewer = s.token("viewer", Some(a));
    assert_eq!(s.call("GET", &path, Some(&viewer), None).await.0, 200);
    assert_eq!(s.call("POST", &format!("{path}/send"), Some(&viewer), None).await.0, 403);
    assert_eq!(s.call("POST", "/v1/tenants", Some(&op_a), Some(json!({"name": "x"}))).await.0, 403);

    // 404: tenant B cannot see tenant A's campaign, template, audience or log.
    let campaign_a = s.ok("GET", &path, &op_a, None).await;
    for p in [
        path.clone(),
        format!("{path}/progress"),
        format!("{path}/messages"),
        format!("/v1/templates/{}", campaign_a["template_id"]),
        format!("/v1/audiences/{}", campaign_a["audience_id"]),
    ] {
        let (status, body) = s.call("GET", &p, Some(&op_b), None).await;
        assert_eq!(status, 404, "{p}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(s.call("POST", &format!("{path}/send"), Some(&op_b), None).await.0, 404);

    // Bad input: clear 4xx with codes, nothing created.
    let (status, body) =
        s.call("POST", "/v1/templates", Some(&op_a), Some(json!({"name": "t", "channel": "fax", "body": "x"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("unknown_channel")));
    let raw =
        s.http.post(format!("{}/v1/templates", s.base)).bearer_auth(&op_a).body("{not json").send().await.unwrap();
    assert_eq!(raw.status(), 400);
    let big = "x".repeat(2 << 20);
    let (status, _) = s.call("POST", "/v1/audiences", Some(&op_a), Some(json!({"name": big}))).await;
    assert_eq!(status, 413);
    let csv = s
        .http
        .post(format!("{}/v1/audiences/{}/import", s.base, campaign_a["audience_id"]))
        .bearer_auth(&op_a)
        .body("a,b")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 415);
    assert_eq!(s.ok("GET", "/v1/templates", &op_a, None).await["items"].as_array().unwrap().len(), 1);

    // Idempotency-Key: same body replays, different body is refused.
    let send = |key: &'static str, body: Value| {
        let req = s
            .http
            .post(format!("{}/v1/audiences", s.base))
            .bearer_auth(&op_a)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let first = send("k1", json!({"name": "idem"})).await;
    let again = send("k1", json!({"name": "idem"})).await;
    assert_eq!(first, again);
    assert_eq!(first.0, 201);
    assert_eq!(send("k1", json!({"name": "other"})).await.0, 422);
    s.stop().await;
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex_encode(&mac.finalize().into_bytes()))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `path`.
fn walk(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().flat_map(|e| walk(&e.path())).collect(),
        Err(_) => vec![path.to_path_buf()],
    }
}

fn status_webhook(statuses: &[(&str, &str, u64)]) -> Vec<u8> {
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|(callback, status, ts)| {
            json!({"id": format!("wamid.{callback}"), "status": status, "timestamp": ts.to_string(),
            "recipient_id": "12025550000", "biz_opaque_callback_data": callback})
        })
        .collect();
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "waba", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": "PN1"},
        "statuses": statuses}}]}]}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_verify_sign_and_reconcile_idempotently() {
    let s = TestServer::start().await;
    let admin = s.token("platform_admin", None);
    let t = s.ok("POST", "/v1/tenants", &admin, Some(json!({"name": "wa"}))).await;
    let tid = t["id"].as_u64().unwrap();
    let provider = json!({"base_url": "http://127.0.0.1:9", "api_version": "v21.0", "access_token": "EAAG-token",
        "app_secret": "app-secret", "verify_token": "vt", "senders": [{"phone_number_id": "PN1", "rate_limit_per_s": 80}]});
    let tenant_admin = s.token("tenant_admin", Some(tid));
    let stored = s.ok("PUT", &format!("/v1/tenants/{tid}/providers/whatsapp"), &tenant_admin, Some(provider)).await;
    assert_eq!(stored["senders"][0], json!({"id": "PN1", "rate_limit_per_s": 80, "burst": 8}), "default burst is 10%");
    // Secrets are sealed at rest and never returned.
    let shown = s.ok("GET", &format!("/v1/tenants/{tid}/providers/whatsapp"), &tenant_admin, None).await;
    assert_eq!(shown["secrets_set"], json!(["access_token", "app_secret", "verify_token"]));
    assert!(!shown.to_string().contains("EAAG-token") && !shown.to_string().contains("app-secret"), "{shown}");
    let on_disk = std::fs::read_dir(s.dir.path().join("store")).unwrap().flatten().any(|entry| {
        walk(&entry.path()).iter().any(|f| std::fs::read(f).is_ok_and(|b| b.windows(10).any(|w| w == b"EAAG-token")))
    });
    assert!(!on_disk, "a provider secret is stored in the clear");
    // An operator may not change providers; another tenant's admin cannot see them.
    let (status, _) = s
        .call(
            "PUT",
            &format!("/v1/tenants/{tid}/providers/whatsapp"),
            Some(&s.token("operator", Some(tid))),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403);
    let other = s.ok("POST", "/v1/tenants", &admin, Some(json!({"name": "other"}))).await["id"].as_u64().unwrap();
    let (status, _) = s
        .call(
            "GET",
            &format!("/v1/tenants/{tid}/providers/whatsapp"),
            Some(&s.token("tenant_admin", Some(other))),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // A token of a tenant that does not exist is refused outright.
    let (status, body) = s
        .call(
            "GET",
            &format!("/v1/tenants/{tid}/providers/whatsapp"),
            Some(&s.token("tenant_admin", Some(other + 100))),
            None,
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("tenant_not_found")));
    let (status, body) = s
        .call("PUT", &format!("/v1/tenants/{tid}/providers/whatsapp"), Some(&tenant_admin), Some(json!({"base_url": "ftp://x", "api_version": "v21.0", "access_token": "a", "app_secret": "b", "verify_token": "c", "senders": [{"phone_number_id": "PN1"}]})))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_provider")));
    let op = s.token("operator", Some(t["id"].as_u64().unwrap()));
    let cid = campaign(&s, &op, 3, 0).await;
    s.ok("POST", &format!("/v1/campaigns/{cid}/send"), &op, None).await;
    s.wait_status(&op, cid, "completed", Duration::from_secs(60)).await;
    let log = s.ok("GET", &format!("/v1/campaigns/{cid}/messages"), &op, None).await;
    let ids: Vec<String> =
        log["items"].as_array().unwrap().iter().map(|i| i["message_id"].as_str().unwrap().to_string()).collect();
    let callback = |id: &str| format!("h1.{}.{cid}.0.{id}", t["id"]);

    // Verification handshake.
    let get = |q: &str| s.http.get(format!("{}/webhooks/whatsapp?{q}", s.base)).send();
    let ok = get("hub.mode=subscribe&hub.challenge=42&hub.verify_token=vt").await.unwrap();
    assert_eq!((ok.status().as_u16(), ok.text().await.unwrap()), (200, "42".to_string()));
    assert_eq!(get("hub.mode=subscribe&hub.challenge=42&hub.verify_token=no").await.unwrap().status(), 403);

    let post = |body: Vec<u8>, signature: String| {
        s.http.post(format!("{}/webhooks/whatsapp", s.base)).header("x-hub-signature-256", signature).body(body).send()
    };
    // A bad signature is refused and records nothing.
    let read_first = status_webhook(&[(&callback(&ids[0]), "read", 1_900_000_000)]);
    assert_eq!(post(read_first.clone(), sign("wrong-secret", &read_first)).await.unwrap().status(), 401);
    assert_eq!(post(read_first.clone(), "sha256=00".into()).await.unwrap().status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = s.ok("GET", &format!("/v1/campaigns/{cid}/progress"), &op, None).await;
    assert_eq!(p["read"], 0, "a badly signed webhook changed state: {p}");

    // Message 1: read, delivered, sent — out of order, each delivered three times.
    // Message 2: failed after sent. Expected final state = in-order application.
    let events = [
        (callback(&ids[1]), "read", 1_900_000_003u64),
        (callback(&ids[2]), "failed", 1_900_000_005),
        (callback(&ids[1]), "sent", 1_900_000_001),
        (callback(&ids[1]), "delivered", 1_900_000_002),
    ];
    for _ in 0..3 {
        for (cb, status, ts) in &events {
            let body = status_webhook(&[(cb.as_str(), status, *ts)]);
            assert_eq!(post(body.clone(), sign("app-secret", &body)).await.unwrap().status(), 200);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let p = loop {
        let p = s.ok("GET", &format!("/v1/campaigns/{cid}/progress"), &op, None).await;
        if p["read"] == 1 && p["failed"] == 0 || std::time::Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // ids[2] was already delivered (simulator receipt): a later "failed" does not undo it.
    assert_eq!((p["read"].as_u64(), p["delivered"].as_u64(), p["failed"].as_u64()), (Some(1), Some(2), Some(0)), "{p}");
    let total: u64 = ["sent", "delivered", "read", "failed", "suppressed", "cancelled", "dead_lettered", "pending"]
        .iter()
        .map(|k| p[k].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3);

    // An inbound "STOP" suppresses the sender for the tenant.
    let stop = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "waba", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "PN1"}, "messages": [{"from": "12025559999", "type": "text", "text": {"body": " Stop "}}]}}]}]})).unwrap();
    assert_eq!(post(stop.clone(), sign("app-secret", &stop)).await.unwrap().status(), 200);
    let list = s.ok("GET", "/v1/suppressions", &op, None).await;
    assert_eq!(list["items"], json!(["+12025559999"]));
    s.stop().await;
}

/// Reads an event stream for `for_ms` (or until it ends): the `data:` lines as JSON, and
/// whether the server ended the stream.
async fn events(s: &TestServer, path: &str, token: &str, for_ms: u64) -> (u16, Vec<Value>, bool) {
    let mut resp = s.http.get(format!("{}{path}", s.base)).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, Vec::new(), true);
    }
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    let ended = loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(_) => break true,
            Err(_) => break false,
        }
    };
    let data =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    (status, data, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_and_previews_stay_inside_the_tenant() {
    let s = TestServer::start().await;
    let (a, op_a) = tenant(&s, "a", Some(1_000)).await;
    let (_b, op_b) = tenant(&s, "b", None).await;
    let cid = campaign(&s, &op_a, 200, 0).await;

    // Another tenant's campaign stream is a 404, its tenant stream shows nothing of A's.
    let (status, _, _) = events(&s, &format!("/v1/campaigns/{cid}/events"), &op_b, 0).await;
    assert_eq!(status, 404);
    let (status, seen, _) = events(&s, "/v1/campaigns/events", &op_b, 1_500).await;
    assert_eq!((status, seen.len()), (200, 0), "tenant b sees no event of tenant a: {seen:?}");
    let (_, seen, _) = events(&s, "/v1/campaigns/events", &op_a, 1_500).await;
    assert!(seen.iter().any(|e| e["id"] == cid && e["status"] == "draft"), "{seen:?}");

    // A campaign's stream follows it to its terminal event, then ends.
    s.ok("POST", &format!("/v1/campaigns/{cid}/send"), &op_a, None).await;
    let (_, seen, ended) = events(&s, &format!("/v1/campaigns/{cid}/events"), &op_a, 60_000).await;
    let last = seen.last().unwrap();
    assert!(ended && last["status"] == "completed" && last["delivered"] == 200, "{seen:?}");

    // The timeline ends at the final counters; another tenant's read is a 404, its DLQ empty.
    let timeline = s.ok("GET", &format!("/v1/campaigns/{cid}/timeline?limit=1000"), &op_a, None).await;
    let points = timeline["points"].as_array().unwrap();
    assert_eq!((points.last().unwrap()["delivered"].as_u64(), &timeline["next_after_ms"]), (Some(200), &json!(null)));
    assert!(points.windows(2).all(|w| w[0]["at_ms"].as_u64() < w[1]["at_ms"].as_u64()), "{timeline}");
    let first = points[0]["at_ms"].as_u64().unwrap();
    let paged = s.ok("GET", &format!("/v1/campaigns/{cid}/timeline?limit=1&after_ms={first}"), &op_a, None).await;
    assert_eq!(paged["points"][0], points.get(1).cloned().unwrap_or(json!(null)), "{paged}");
    let (status, body) = s.call("GET", &format!("/v1/campaigns/{cid}/timeline"), Some(&op_b), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, _) = s.call("GET", &format!("/v1/campaigns/{cid}/timeline?limit=0"), Some(&op_a), None).await;
    assert_eq!(status, 400);
    let theirs = s.ok("GET", &format!("/v1/dlq?campaign_id={cid}&code=131026"), &op_b, None).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");

    // Senders: each tenant sees its own only.
    let mine = s.ok("GET", "/v1/senders", &op_a, None).await;
    assert!(!mine["items"].as_array().unwrap().is_empty(), "{mine}");
    let theirs = s.ok("GET", "/v1/senders", &op_b, None).await;
    assert_eq!(theirs["items"], json!([]), "tenant b sees no sender of tenant a");
    // A configured sender this process does not pace yet is listed from the settings.
    let (c, admin_c, op_c) = tenant_with_admin(&s, "c").await;
    put_whatsapp(&s, c, &admin_c, "http://127.0.0.1:9", "PN-C", 40, json!({})).await;
    let listed = s.ok("GET", "/v1/senders", &op_c, None).await;
    let expected = json!([{"provider": "whatsapp", "sender": "PN-C", "configured_rate_per_s": 40.0,
        "current_rate_per_s": null, "stopped": false, "pace_signals": 0, "paced_here": false}]);
    assert_eq!(listed["items"], expected);
    let mine = s.ok("GET", "/v1/senders", &op_a, None).await;
    assert!(!mine.to_string().contains("PN-C"), "{mine}");

    // A tenant holds at most 16 streams; the 17th is a 429, and another tenant is unaffected.
    let mut open = Vec::new();
    for _ in 0..16 {
        let r = s.http.get(format!("{}/v1/campaigns/events", s.base)).bearer_auth(&op_a).send().await.unwrap();
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let (status, body) = s.call("GET", "/v1/campaigns/events", Some(&op_a), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_streams")));
    let r = s.http.get(format!("{}/v1/campaigns/events", s.base)).bearer_auth(&op_b).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(open);

    // Previews: operators only; compile and render errors are 422 with their codes.
    let viewer = s.token("viewer", Some(a));
    let body = |text: &str| json!({"template": {"name": "p", "channel": "sms", "body": text}, "address": "+12025550100", "attributes": {"name": "Ada"}});
    let (status, _) = s.call("POST", "/v1/templates/preview", Some(&viewer), Some(body("Hi {{ name }}"))).await;
    assert_eq!(status, 403);
    let shown = s.ok("POST", "/v1/templates/preview", &op_b, Some(body("Hi {{ name }}"))).await;
    assert_eq!(shown["text"], "Hi Ada");
    let (status, err) = s.call("POST", "/v1/templates/preview", Some(&op_b), Some(body("Hi {{ name"))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("template_invalid")));
    let (status, err) = s.call("POST", "/v1/templates/preview", Some(&op_b), Some(body("Hi {{ city }}"))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("missing_variable")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_needs_its_csrf_token_to_change_anything() {
    let s = TestServer::start().await;
    let (_a, op) = tenant(&s, "a", None).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signin = client
        .post(format!("{}/console/signin", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={op}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 303);
    let cookie = signin.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(signin.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let session = cookie.split(';').next().unwrap().to_string();
    let me: Value = client
        .get(format!("{}/console/session", s.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "operator");
    let create = |csrf: Option<&str>| {
        let mut r =
            client.post(format!("{}/v1/audiences", s.base)).header("cookie", &session).json(&json!({"name": "x"}));
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.send()
    };
    let refused = create(None).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "csrf_failed");
    assert_eq!(create(Some("0123")).await.unwrap().status(), 403);
    assert_eq!(create(me["csrf"].as_str()).await.unwrap().status(), 201);
    // Reads need only the cookie; a cross-site sign-in post is refused.
    let list = client.get(format!("{}/v1/audiences", s.base)).header("cookie", &session).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let cross = client
        .post(format!("{}/console/signin", s.base))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={op}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(cross.headers().get("set-cookie").is_none());
    // Without a session, console pages go to the sign-in form.
    let page = client.get(format!("{}/console/campaigns", s.base)).send().await.unwrap();
    assert_eq!((page.status().as_u16(), page.headers()["location"].to_str().unwrap()), (303, "/console/signin"));
}
