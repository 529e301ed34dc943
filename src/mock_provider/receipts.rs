//! The mock provider's status webhooks: a time-ordered queue of pending statuses, posted when
//! due — WhatsApp statuses batched per phone number and signed with `X-Hub-Signature-256`,
//! SMS statuses one per request to the message's `StatusCallback`, signed like Twilio — and
//! retried with backoff until the receiver answers 2xx, as the real providers do.

use rand::Rng;
use schemas::now_ms;
use serde_json::json;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a status goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    WhatsApp { phone_number_id: String },
    Sms { url: String, account_sid: String, auth_token: String, from: String },
}

/// A status waiting to be posted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pending {
    pub due_ms: u64,
    pub target: Target,
    pub id: String,
    pub status: &'static str,
    /// `biz_opaque_callback_data` to echo (WhatsApp).
    pub callback: String,
    pub to: String,
    pub attempts: u32,
}

/// Final statuses for the WhatsApp calls a calls log says were accepted.
pub fn owed_from_log(path: &std::path::Path) -> Vec<Pending> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let now = now_ms();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["channel"] == "whatsapp")
        .filter_map(|v| {
            Some(Pending {
                due_ms: now + rand::rng().random_range(100..2_000),
                target: Target::WhatsApp { phone_number_id: v["phone_number_id"].as_str()?.to_string() },
                id: v["wamid"].as_str()?.to_string(),
                status: "delivered",
                callback: v["callback"].as_str().unwrap_or_default().to_string(),
                to: v["to"].as_str().unwrap_or_default().to_string(),
                attempts: 0,
            })
        })
        .collect()
}

pub struct Receipts {
    queue: Mutex<BinaryHeap<Reverse<Pending>>>,
    webhook_url: String,
    app_secret: String,
    client: reqwest::Client,
    stopped: AtomicBool,
    posted: AtomicU64,
    statuses: AtomicU64,
    failures: AtomicU64,
}

/// Statuses per WhatsApp webhook POST.
const BATCH: usize = 100;

impl Receipts {
    pub fn start(webhook_url: String, app_secret: String) -> Arc<Self> {
        let this = Arc::new(Self {
            queue: Mutex::new(BinaryHeap::new()),
            webhook_url,
            app_secret,
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
            stopped: AtomicBool::new(false),
            posted: AtomicU64::new(0),
            statuses: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let worker = this.clone();
        tokio::spawn(async move { worker.run().await });
        this
    }

    pub fn push(&self, pending: Pending) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(Reverse(pending));
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// (webhook POSTs, statuses posted, failed POSTs).
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.posted.load(Ordering::Relaxed),
            self.statuses.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    fn due(&self) -> Vec<Pending> {
        let now = now_ms();
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        while queue.peek().is_some_and(|Reverse(p)| p.due_ms <= now) && out.len() < 5_000 {
            out.extend(queue.pop().map(|Reverse(p)| p));
        }
        out
    }

    async fn run(self: Arc<Self>) {
        while !self.stopped.load(Ordering::Relaxed) {
            let due = self.due();
            if due.is_empty() {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            let mut whatsapp: HashMap<String, Vec<Pending>> = HashMap::new();
            let mut posts = Vec::new();
            for p in due {
                match &p.target {
                    Target::WhatsApp { phone_number_id } => {
                        whatsapp.entry(phone_number_id.clone()).or_default().push(p)
                    }
                    Target::Sms { .. } => posts.push(vec![p]),
                }
            }
            for (_, list) in whatsapp {
                posts.extend(list.chunks(BATCH).map(|c| c.to_vec()));
            }
            let results = futures::future::join_all(posts.into_iter().map(|batch| {
                let this = self.clone();
                async move {
                    let ok = this.post(&batch).await;
                    (batch, ok)
                }
            }))
            .await;
            for (batch, ok) in results {
                if ok {
                    self.posted.fetch_add(1, Ordering::Relaxed);
                    self.statuses.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    continue;
                }
                self.failures.fetch_add(1, Ordering::Relaxed);
                for mut p in batch {
                    // Retried with backoff (capped), like Meta's webhook retries.
                    p.attempts += 1;
                    let backoff = 500u64.saturating_mul(1 << p.attempts.min(7)).min(60_000);
                    p.due_ms = now_ms() + backoff + rand::rng().random_range(0..250);
                    self.push(p);
                }
            }
        }
    }

    async fn post(&self, batch: &[Pending]) -> bool {
        let Some(first) = batch.first() else { return true };
        let request = match &first.target {
            Target::WhatsApp { phone_number_id } => {
                if self.webhook_url.is_empty() {
                    return true;
                }
                let statuses: Vec<_> = batch
                    .iter()
                    .map(|p| {
                        let mut s = json!({"id": p.id, "status": p.status, "timestamp": (now_ms() / 1000).to_string(),
                            "recipient_id": p.to, "biz_opaque_callback_data": p.callback,
                            "pricing": {"billable": true, "pricing_model": "PMP", "category": "marketing"}});
                        if p.status == "failed" {
                            s["errors"] = json!([{"code": 131026, "title": "Message undeliverable",
                                "message": "Message undeliverable", "error_data": {"details": "mock"}}]);
                        }
                        s
                    })
                    .collect();
                let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "mock-waba", "changes": [{
                    "field": "messages", "value": {"messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
                    "statuses": statuses}}]}]})
                .to_string();
                let signature = schemas::helpers::sign_sha256_hex(self.app_secret.as_bytes(), body.as_bytes());
                self.client
                    .post(&self.webhook_url)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", signature)
                    .body(body)
            }
            Target::Sms { url, account_sid, auth_token, from } => {
                let status = match first.status {
                    "failed" => "undelivered",
                    s => s,
                };
                let mut form = vec![
                    ("AccountSid".to_string(), account_sid.clone()),
                    ("From".to_string(), from.clone()),
                    ("MessageSid".to_string(), first.id.clone()),
                    ("MessageStatus".to_string(), status.to_string()),
                    ("To".to_string(), first.to.clone()),
                ];
                if status == "undelivered" {
                    form.push(("ErrorCode".to_string(), "30003".to_string()));
                }
                let signature = stages::deliver::providers::sms::status::twilio_signature(auth_token, url, &form);
                let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
                self.client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", signature)
                    .body(body)
            }
        };
        matches!(request.send().await, Ok(r) if r.status().is_success())
    }
}
