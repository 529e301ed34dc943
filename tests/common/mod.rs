//! A real `herald serve` (API + embedded pipeline) on 127.0.0.1:0 in a temp dir, and a small
//! JSON client for it.
#![allow(dead_code)]

use herald::config::HeraldConfig;
use herald::serve::Server;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub config: HeraldConfig,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub const SECRET: &str = "test-secret-0123456789abcdef";

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut HeraldConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HeraldConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            ..HeraldConfig::default()
        };
        config.jwt.secret = Some(SECRET.into());
        config.simulator.latency_ms = 1;
        config.simulator.receipt_delay_ms = 50;
        adjust(&mut config);
        let server = Server::start(&config).await.unwrap();
        let base = format!("http://{}", server.addr);
        Self { server: Some(server), base, config, dir, http: reqwest::Client::new() }
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

    pub fn calls_log(&self) -> PathBuf {
        self.dir.path().join("provider-calls.jsonl")
    }

    /// Accepted provider calls per message id, from the simulator's own log.
    pub fn accepted_per_message(&self) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for line in std::fs::read_to_string(self.calls_log()).unwrap_or_default().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v.get("provider_message_id").is_some() {
                *out.entry(v["message_id"].as_str().unwrap().to_string()).or_default() += 1;
            }
        }
        out
    }

    /// Provider calls (accepted) of one campaign, with their timestamps.
    pub fn accepted_times(&self, campaign: u64) -> Vec<u64> {
        std::fs::read_to_string(self.calls_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
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

fn herald_api_claims(role: &str, tenant: Option<u64>, exp: u64) -> api::Claims {
    api::Claims { sub: "test".into(), tenant_id: tenant, role: role.parse().unwrap(), exp }
}

/// Creates a tenant (as platform admin) and returns (tenant id, operator token).
pub async fn tenant(s: &TestServer, name: &str, rate: Option<u32>) -> (u64, String) {
    let admin = s.token("platform_admin", None);
    let t =
        s.ok("POST", "/v1/tenants", &admin, Some(serde_json::json!({"name": name, "rate_limit_per_s": rate}))).await;
    let id = t["id"].as_u64().unwrap();
    (id, s.token("operator", Some(id)))
}

/// Creates an SMS template, an audience with `n` valid recipients and a draft campaign.
pub async fn campaign(s: &TestServer, op: &str, n: usize, offset: usize) -> u64 {
    let t = s
        .ok(
            "POST",
            "/v1/templates",
            op,
            Some(serde_json::json!({"name": "t", "channel": "sms", "body": "Hi {{ name }}"})),
        )
        .await;
    let a = s.ok("POST", "/v1/audiences", op, Some(serde_json::json!({"name": "a"}))).await;
    let aid = a["id"].as_u64().unwrap();
    let mut csv = String::from("address,name\n");
    for i in 0..n {
        csv.push_str(&format!("+1202{:07},Member {i}\n", 5_550_000 + offset + i));
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
