//! Races a real HTTP client can start, against a store that yields between every step (as a
//! networked store would): concurrent requests with one `Idempotency-Key` create once, and
//! concurrent status changes of one campaign have one winner whose status is the final one.

use herald_api::{ApiConfig, AppState, Auth, Claims, Role};
use pipeline::{EmbeddedTopics, TopicBackend};
use schemas::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use storage::testing::{YieldingState, YieldingStore};
use storage::*;

struct Api {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let embedded = Arc::new(EmbeddedStore::open(&dir.path().join("store"), Default::default()).unwrap());
        let state: Arc<dyn SharedState> =
            Arc::new(YieldingState::new(Arc::new(EmbeddedState::new(embedded.clone())), Duration::from_millis(2)));
        let store: Arc<dyn Store> = Arc::new(YieldingStore::new(embedded, Duration::from_millis(2)));
        let topics: Arc<dyn TopicBackend> =
            EmbeddedTopics::open(&dir.path().join("topics"), &pipeline::topics::all(), Default::default()).unwrap();
        let secrets = storage::secrets::SecretKey::from_bytes(&[9; 32]).unwrap();
        let state = AppState::new(
            store,
            state,
            topics,
            Auth::hs256(b"races-secret"),
            Default::default(),
            secrets,
            ApiConfig::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = herald_api::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        Self { base, http, auth: Auth::hs256(b"races-secret"), state, _dir: dir }
    }

    fn token(&self, role: Role, tenant: Option<u64>) -> String {
        self.auth.mint(&Claims::new("racer", tenant, role, schemas::now_ms() / 1000 + 3_600)).unwrap()
    }

    async fn post(&self, path: &str, token: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A tenant with an operator token.
    async fn tenant(&self) -> (u64, String) {
        let admin = self.token(Role::PlatformAdmin, None);
        let (status, t) = self.post("/v1/tenants", &admin, None, json!({"name": "racer"})).await;
        assert_eq!(status, 201, "{t}");
        let id = t["id"].as_u64().unwrap();
        (id, self.token(Role::Operator, Some(id)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_idempotency_key_create_once() {
    let api = Api::start().await;
    let (tenant, op) = api.tenant().await;
    let requests = (0..32).map(|_| api.post("/v1/audiences", &op, Some("same-key"), json!({"name": "once"})));
    let answers = futures::future::join_all(requests).await;
    let created: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    for (status, body) in &answers {
        assert!(
            *status == 201 || (*status == 409 && body["error"]["code"] == "idempotency_in_progress"),
            "{status}: {body}"
        );
    }
    assert!(!created.is_empty());
    assert!(created.iter().all(|b| b["id"] == created[0]["id"]), "two different creations answered");
    let stored = api.state.store.list_audiences(TenantId(tenant)).await.unwrap();
    assert_eq!(stored.len(), 1, "the create ran {} times", stored.len());
    // Afterwards every retry replays the stored response; another body is refused.
    let (status, again) = api.post("/v1/audiences", &op, Some("same-key"), json!({"name": "once"})).await;
    assert_eq!((status, &again["id"]), (201, &created[0]["id"]));
    let (status, other) = api.post("/v1/audiences", &op, Some("same-key"), json!({"name": "other"})).await;
    assert_eq!((status, other["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));
}

/// A running campaign of a fresh template and audience; returns its id.
async fn running_campaign(api: &Api, op: &str, scheduled_at: Option<u64>) -> u64 {
    let (_, t) = api.post("/v1/templates", op, None, json!({"name": "t", "channel": "sms", "body": "Hi"})).await;
    let (_, a) = api.post("/v1/audiences", op, None, json!({"name": "a"})).await;
    let mut body = json!({"name": "c", "template_id": t["id"], "audience_id": a["id"]});
    if let Some(at) = scheduled_at {
        body["scheduled_at"] = json!(at);
    }
    let (status, c) = api.post("/v1/campaigns", op, None, body).await;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_u64().unwrap();
    assert_eq!(api.post(&format!("/v1/campaigns/{id}/send"), op, None, json!({})).await.0, 202);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_and_a_cancel_sent_together_have_one_winner() {
    let api = Api::start().await;
    let (tenant, op) = api.tenant().await;
    for trial in 0..10 {
        let id = running_campaign(&api, &op, None).await;
        let (pause_path, cancel_path) = (format!("/v1/campaigns/{id}/pause"), format!("/v1/campaigns/{id}/cancel"));
        let (pause, cancel) =
            tokio::join!(api.post(&pause_path, &op, None, json!({})), api.post(&cancel_path, &op, None, json!({})),);
        let stored = api.state.store.get_campaign(TenantId(tenant), CampaignId(id)).await.unwrap().unwrap();
        match (pause.0, cancel.0) {
            // Both may win one after the other (pause, then cancel of the paused campaign)...
            (202, 202) => assert_eq!(stored.status, CampaignStatus::Cancelled, "trial {trial}"),
            // ... or one loses the compare-and-set, and the final status is the winner's.
            (202, 409) => assert_eq!(stored.status, CampaignStatus::Paused, "trial {trial}: {cancel:?}"),
            (409, 202) => assert_eq!(stored.status, CampaignStatus::Cancelled, "trial {trial}: {pause:?}"),
            other => panic!("trial {trial}: {other:?} {pause:?} {cancel:?}"),
        }
        for (status, body) in [&pause, &cancel] {
            if *status == 409 {
                assert!(
                    matches!(body["error"]["code"].as_str(), Some("campaign_changed" | "illegal_transition")),
                    "{body}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_never_overwrites_a_cancel() {
    let api = Api::start().await;
    let (tenant, op) = api.tenant().await;
    for trial in 0..10 {
        // Scheduled a little ahead, so `send` schedules it; then it becomes due.
        let at = schemas::now_ms() + 300;
        let id = running_campaign(&api, &op, Some(at)).await;
        let stored = api.state.store.get_campaign(TenantId(tenant), CampaignId(id)).await.unwrap().unwrap();
        assert_eq!(stored.status, CampaignStatus::Scheduled);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let cancel_path = format!("/v1/campaigns/{id}/cancel");
        let (started, cancel) = tokio::join!(
            api.state.lifecycle.start_due(schemas::now_ms()),
            api.post(&cancel_path, &op, None, json!({})),
        );
        let started = started.unwrap();
        let stored = api.state.store.get_campaign(TenantId(tenant), CampaignId(id)).await.unwrap().unwrap();
        match cancel.0 {
            202 => assert_eq!(stored.status, CampaignStatus::Cancelled, "trial {trial}: the start overwrote a cancel"),
            409 => assert_eq!((started, stored.status), (1, CampaignStatus::Running), "trial {trial}"),
            other => panic!("trial {trial}: {other} {cancel:?}"),
        }
    }
}
