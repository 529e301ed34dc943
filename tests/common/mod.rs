//! A real `herald serve` (API + embedded pipeline) on 127.0.0.1:0 in a temp dir, and a small
//! JSON client for it.
#![allow(dead_code)]

pub mod browser;

use herald::config::HeraldConfig;
use herald::serve::Server;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct TestServer {
    pub server: Option<Server>,
    pub api: Api,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A JSON client for a Herald API (in this process or a child `herald serve`), minting its own
/// tokens with the configured JWT secret.
pub struct Api {
    pub base: String,
    pub config: HeraldConfig,
    pub http: reqwest::Client,
}

pub const SECRET: &str = "test-secret-0123456789abcdef";

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut HeraldConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Mock providers listen on loopback: tests allow private provider addresses (the SSRF
        // tests turn it off again).
        let mut config = HeraldConfig {
            listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            allow_private_provider_addresses: true,
            ..HeraldConfig::default()
        };
        config.jwt.secret = Some(SECRET.into());
        config.simulator.latency_ms = 1;
        config.simulator.receipt_delay_ms = 50;
        adjust(&mut config);
        let server = Server::start(&config).await.unwrap();
        let base = format!("http://{}", server.addr);
        Self { server: Some(server), api: Api::new(base, config), dir }
    }

    /// The Prometheus text from the metrics listener.
    pub async fn metrics(&self) -> String {
        let addr = self.server.as_ref().and_then(|s| s.metrics_addr).expect("metrics listener");
        self.http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// The metrics text once `check` holds on it, or the last text after 10 s (runners and
    /// stages publish their snapshots about once a second).
    pub async fn metrics_when(&self, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            if check(&text) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One counter or gauge from [`TestServer::metrics`] (the sum over its label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn calls_log(&self) -> PathBuf {
        self.dir.path().join("provider-calls.jsonl")
    }

    /// Accepted provider calls per message id, from the simulator's own log.
    pub fn accepted_per_message(&self) -> HashMap<String, u32> {
        accepted_per_message(&self.calls_log())
    }

    /// Provider calls (accepted) of one campaign, with their timestamps.
    pub fn accepted_times(&self, campaign: u64) -> Vec<u64> {
        json_lines(&self.calls_log())
            .into_iter()
            .filter(|v| v["campaign"] == campaign && v.get("provider_message_id").is_some())
            .map(|v| v["ts_ms"].as_u64().unwrap())
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
    }
}

impl Api {
    pub fn new(base: String, config: HeraldConfig) -> Self {
        // No pooled connections: after the server refuses a body it did not read (413, 415) it
        // closes the connection, and a pooled client could reuse it in that instant
        // (`IncompleteMessage`, seen in CI).
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        Self { base, config, http }
    }

    pub fn token(&self, role: &str, tenant: Option<u64>) -> String {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
        let claims = herald_api_claims(role, tenant, exp);
        self.config.auth().unwrap().mint(&claims).unwrap()
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, Some(token), body).await;
        assert!((200..300).contains(&status), "{method} {path} -> {status}: {value}");
        value
    }

    /// Polls progress until the campaign reaches `status` (or panics after `timeout`).
    pub async fn wait_status(&self, token: &str, campaign: u64, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.ok("GET", &format!("/v1/campaigns/{campaign}/progress"), token, None).await;
            if p["status"] == status {
                return p;
            }
            assert!(Instant::now() < deadline, "campaign {campaign} did not reach {status}: {p}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn herald_api_claims(role: &str, tenant: Option<u64>, exp: u64) -> api::Claims {
    api::Claims::new("test", tenant, role.parse().unwrap(), exp)
}

/// Creates a tenant (as platform admin) and returns (tenant id, operator token).
pub async fn tenant(s: &Api, name: &str, rate: Option<u32>) -> (u64, String) {
    let admin = s.token("platform_admin", None);
    let t =
        s.ok("POST", "/v1/tenants", &admin, Some(serde_json::json!({"name": name, "rate_limit_per_s": rate}))).await;
    let id = t["id"].as_u64().unwrap();
    (id, s.token("operator", Some(id)))
}

/// Creates an SMS template, an audience with `n` valid recipients and a draft campaign.
pub async fn campaign(s: &Api, op: &str, n: usize, offset: usize) -> u64 {
    let t = s
        .ok(
            "POST",
            "/v1/templates",
            op,
            Some(serde_json::json!({"name": "t", "channel": "sms", "body": "Hi {{ name }}"})),
        )
        .await;
    let aid = audience_from(s, op, n, offset, false).await;
    let c = s
        .ok(
            "POST",
            "/v1/campaigns",
            op,
            Some(serde_json::json!({"name": "c", "template_id": t["id"], "audience_id": aid})),
        )
        .await;
    c["id"].as_u64().unwrap()
}

/// A WhatsApp template with one body parameter (`{{ name }}`); returns its id.
pub async fn whatsapp_template(s: &Api, op: &str) -> u64 {
    let body = serde_json::json!({"name": "wa", "channel": "whatsapp", "whatsapp": {"template_name": "order_update_v1",
        "language": "en_US", "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{ name }}"}]}]}});
    s.ok("POST", "/v1/templates", op, Some(body)).await["id"].as_u64().unwrap()
}

/// An audience of `n` recipients (`+1202555xxxx` phone numbers, or `member-i@example.com` when
/// `email`), imported over CSV; returns its id.
pub async fn audience(s: &Api, op: &str, n: usize, email: bool) -> u64 {
    audience_from(s, op, n, 0, email).await
}

/// [`audience`] with recipient numbering starting at `offset`.
pub async fn audience_from(s: &Api, op: &str, n: usize, offset: usize, email: bool) -> u64 {
    let a = s.ok("POST", "/v1/audiences", op, Some(serde_json::json!({"name": "a"}))).await;
    let aid = a["id"].as_u64().unwrap();
    let mut csv = String::from("address,name\n");
    for i in 0..n {
        if email {
            csv.push_str(&format!("member-{i}@example.com,Member {i}\n"));
        } else {
            csv.push_str(&format!("+1202{:07},Member {i}\n", 5_550_000 + offset + i));
        }
    }
    let resp = s
        .http
        .post(format!("{}/v1/audiences/{aid}/import", s.base))
        .bearer_auth(op)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["imported"].as_u64(), Some(n as u64), "{report}");
    aid
}

/// Creates and sends a campaign; returns its id.
pub async fn send(s: &Api, op: &str, template: u64, audience: u64) -> u64 {
    let c = s
        .ok(
            "POST",
            "/v1/campaigns",
            op,
            Some(serde_json::json!({"name": "c", "template_id": template, "audience_id": audience})),
        )
        .await;
    let id = c["id"].as_u64().unwrap();
    s.ok("POST", &format!("/v1/campaigns/{id}/send"), op, None).await;
    id
}

/// A free port on 127.0.0.1 (bound and released; the caller binds it next).
/// The complete lines of a JSON-lines file another process is still appending to: a last line
/// without its newline is being written and is left for the next read. A complete line that is
/// not JSON fails the test.
pub fn json_lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// Accepted provider calls per message id in a simulator calls log.
pub fn accepted_per_message(path: &std::path::Path) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for v in json_lines(path) {
        if v.get("provider_message_id").is_some() {
            *out.entry(v["message_id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    out
}

/// Waits until a process started on `port` answers `/healthz`; fails after `timeout`.
pub async fn wait_healthy(port: u16, timeout: Duration, what: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tenant with a tenant-admin and an operator token: (tenant id, admin, operator).
pub async fn tenant_with_admin(s: &Api, name: &str) -> (u64, String, String) {
    let admin = s.token("platform_admin", None);
    let t = s.ok("POST", "/v1/tenants", &admin, Some(serde_json::json!({"name": name}))).await;
    let id = t["id"].as_u64().unwrap();
    (id, s.token("tenant_admin", Some(id)), s.token("operator", Some(id)))
}

/// Gives a tenant a WhatsApp provider at `base_url` with one sender.
pub async fn put_whatsapp(s: &Api, tenant: u64, admin: &str, base_url: &str, sender: &str, rate: u32, extra: Value) {
    let mut body = serde_json::json!({"base_url": base_url, "api_version": "v21.0", "access_token": "token",
        "app_secret": "app-secret", "verify_token": "verify",
        "senders": [{"phone_number_id": sender, "rate_limit_per_s": rate}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.ok("PUT", &format!("/v1/tenants/{tenant}/providers/whatsapp"), admin, Some(body)).await;
}

/// `X-Hub-Signature-256` of `body` under `secret`.
pub fn sign_hub(secret: &str, body: &[u8]) -> String {
    schemas::helpers::sign_sha256_hex(secret.as_bytes(), body)
}

/// A WhatsApp status webhook body for `phone_number_id` with `statuses` (each
/// `{"id", "status", "timestamp", ...}`).
pub fn whatsapp_webhook(phone_number_id: &str, statuses: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "waba",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "1555", "phone_number_id": phone_number_id}, "statuses": statuses}}]}]}))
    .unwrap()
}

/// POSTs a WhatsApp webhook signed with `secret`; returns the status code.
pub async fn post_whatsapp_webhook(s: &Api, secret: &str, body: Vec<u8>) -> u16 {
    s.http
        .post(format!("{}/webhooks/whatsapp", s.base))
        .header("x-hub-signature-256", sign_hub(secret, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What a [`FakeProvider`] answers: HTTP status and body.
pub type Answer = (u16, String);

/// A stand-in provider endpoint on 127.0.0.1 whose answers the test chooses (the hostile
/// `base_url` a tenant controls). Counts the calls it got.
pub struct FakeProvider {
    pub addr: std::net::SocketAddr,
    pub calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    pub async fn start(answer: impl Fn(&Value) -> Answer + Send + Sync + 'static) -> Self {
        use axum::{body::Bytes, Router};
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let answer = std::sync::Arc::new(answer);
        let counter = calls.clone();
        let app = Router::new().fallback(move |body: Bytes| {
            let (counter, answer) = (counter.clone(), answer.clone());
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, text) = answer(&request);
                (axum::http::StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], text)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, calls, task }
    }

    /// A WhatsApp Cloud API stand-in that accepts every message with the id `wamid()` gives.
    pub async fn whatsapp(wamid: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self::start(move |_| (200, serde_json::json!({"messages": [{"id": wamid()}]}).to_string())).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `f` every 100 ms until it returns `Some` (panics with `what` after `timeout`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `herald mock-provider` child process, killed on drop.
pub struct MockProcess {
    child: std::process::Child,
    pub port: u16,
}

impl MockProcess {
    pub async fn start(port: u16, webhook_url: &str, calls_log: &std::path::Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "mock-provider".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--webhook-url".into(),
            webhook_url.into(),
            "--app-secret".into(),
            "app-secret".into(),
            "--calls-log".into(),
            calls_log.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting herald mock-provider");
        wait_healthy(port, Duration::from_secs(20), "herald mock-provider").await;
        Self { child, port }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
