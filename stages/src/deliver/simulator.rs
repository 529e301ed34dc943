//! The in-process simulator provider, and its independent ledger of calls.
//!
//! Answers like a real provider: configurable latency (base + uniform jitter), a failure mix
//! (transient 503s, permanent 131026 "undeliverable"), rate-limit emulation per sender
//! (answers 130429 when a sender exceeds `rate + burst` in a sliding second) and receipts
//! (sent → delivered, a share read or failed) posted to `receipts.inbound` after a delay,
//! carrying our callback data like WhatsApp's `biz_opaque_callback_data`.
//!
//! Its [`Ledger`] records every call independently of Herald's own state — per campaign a
//! bitmap of accepted recipients (duplicates counted), per tenant sliding-window maxima and
//! rates, and send-trigger → accept latency — and optionally appends each call to a JSON-lines
//! calls log written before the call is answered, so the record survives a SIGKILL. On start it
//! reloads that log: it remembers what it accepted (for `lookup` and duplicate detection) and
//! re-posts receipts Herald may not have received, as a real provider retries webhooks.
//!
//! It is not: a network server (that is `herald mock-provider`, a later issue).

use super::provider::{FailureClass, Lookup, Provider, ProviderError, SendResult};
use async_trait::async_trait;
use pipeline::{topics, Emitter, TopicBackend};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use schemas::helpers::SlidingWindow;
use schemas::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub latency: Duration,
    pub jitter: Duration,
    /// Share of calls answered with a transient 503.
    pub transient_failure_rate: f64,
    /// Share of calls answered with a permanent 131026.
    pub permanent_failure_rate: f64,
    /// Per-sender limit the simulator enforces (answers 130429 beyond `rate + burst` per second).
    pub enforce_rate: Option<(u32, u32)>,
    pub receipt_delay: Duration,
    /// Share of accepted messages whose final receipt is `read` (else `delivered`).
    pub read_share: f64,
    /// Share of accepted messages whose final receipt is `failed`.
    pub receipt_failure_rate: f64,
    /// Append every call here (JSON lines), flushed to the OS before answering.
    pub calls_log: Option<PathBuf>,
    pub seed: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(2),
            jitter: Duration::from_millis(2),
            transient_failure_rate: 0.0,
            permanent_failure_rate: 0.0,
            enforce_rate: None,
            receipt_delay: Duration::from_millis(200),
            read_share: 0.0,
            receipt_failure_rate: 0.0,
            calls_log: None,
            seed: 7,
        }
    }
}

/// One line of the calls log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub ts_ms: u64,
    pub sender: String,
    pub tenant: u64,
    pub campaign: u64,
    pub recipient: u64,
    pub to: String,
    pub message_id: String,
    pub callback: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_code: Option<String>,
}

/// The calls in a calls log (none when it does not exist; unreadable lines are skipped: a
/// line cut short by a kill).
fn read_calls(path: &std::path::Path) -> std::io::Result<Vec<CallRecord>> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(Vec::new()) };
    let mut calls = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(call) = serde_json::from_str::<CallRecord>(&line?) {
            calls.push(call);
        }
    }
    Ok(calls)
}

/// Per-tenant figures measured at the provider.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantCalls {
    pub calls: u64,
    pub accepts: u64,
    pub max_1s_window: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    #[serde(skip)]
    window: SlidingWindow,
}

impl TenantCalls {
    /// Accepted calls per second between the first and the last call.
    pub fn achieved_rate(&self) -> f64 {
        let span = self.last_ms.saturating_sub(self.first_ms) as f64 / 1000.0;
        if span <= 0.0 {
            self.accepts as f64
        } else {
            self.accepts.saturating_sub(1) as f64 / span
        }
    }
}

/// The simulator's own record of calls (see the module docs).
pub struct Ledger {
    /// (tenant, campaign) → bitmap of accepted recipient ids.
    accepted: HashMap<(TenantId, CampaignId), Vec<u64>>,
    pub tenants: HashMap<TenantId, TenantCalls>,
    pub calls: u64,
    pub accepts: u64,
    pub duplicate_accepts: u64,
    pub latency_ms: hdrhistogram::Histogram<u64>,
}

impl Ledger {
    fn new() -> Self {
        Self {
            accepted: HashMap::new(),
            tenants: HashMap::new(),
            calls: 0,
            accepts: 0,
            duplicate_accepts: 0,
            latency_ms: hdrhistogram::Histogram::new_with_bounds(1, 24 * 3_600_000, 2)
                .expect("static histogram bounds"),
        }
    }

    fn is_accepted(&self, key: &MessageKey, recipient: RecipientId) -> bool {
        let (word, bit) = ((recipient.0 / 64) as usize, recipient.0 % 64);
        self.accepted.get(&(key.tenant, key.campaign)).and_then(|b| b.get(word)).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Marks an accept; returns false when the recipient had been accepted before (a duplicate).
    fn mark_accepted(&mut self, key: &MessageKey, recipient: RecipientId) -> bool {
        let (word, bit) = ((recipient.0 / 64) as usize, recipient.0 % 64);
        let bits = self.accepted.entry((key.tenant, key.campaign)).or_default();
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let fresh = bits[word] & (1 << bit) == 0;
        bits[word] |= 1 << bit;
        fresh
    }

    /// Counts a call arriving at `now_ms`; returns the calls in the sender's last second.
    fn count_call(&mut self, tenant: TenantId, now_ms: u64) -> u64 {
        let t = self.tenants.entry(tenant).or_default();
        t.calls += 1;
        if t.first_ms == 0 {
            t.first_ms = now_ms;
        }
        t.last_ms = now_ms;
        let in_window = t.window.record(std::time::Instant::now()) as u64;
        t.max_1s_window = t.max_1s_window.max(in_window);
        self.calls += 1;
        in_window
    }

    /// The ledger of several processes' calls logs merged (a distributed run, one simulator
    /// per worker): calls in time order, 1 s windows and trigger -> accept latency from the
    /// logged times.
    pub fn from_call_logs(paths: &[PathBuf], trigger_ms: u64) -> std::io::Result<Self> {
        let mut calls = Vec::new();
        for path in paths {
            calls.extend(read_calls(path)?);
        }
        calls.sort_by_key(|c| c.ts_ms);
        let mut ledger = Self::new();
        let mut windows: HashMap<TenantId, VecDeque<u64>> = HashMap::new();
        for call in calls {
            let tenant = TenantId(call.tenant);
            let window = windows.entry(tenant).or_default();
            window.push_back(call.ts_ms);
            while window.front().is_some_and(|&t| t + 1000 <= call.ts_ms) {
                window.pop_front();
            }
            let t = ledger.tenants.entry(tenant).or_default();
            t.calls += 1;
            t.first_ms = if t.first_ms == 0 { call.ts_ms } else { t.first_ms.min(call.ts_ms) };
            t.last_ms = t.last_ms.max(call.ts_ms);
            t.max_1s_window = t.max_1s_window.max(window.len() as u64);
            ledger.calls += 1;
            if call.provider_message_id.is_none() {
                continue;
            }
            ledger.tenants.entry(tenant).or_default().accepts += 1;
            ledger.accepts += 1;
            let key = MessageKey::from_callback(&call.callback);
            if key.is_some_and(|k| !ledger.mark_accepted(&k, RecipientId(call.recipient))) {
                ledger.duplicate_accepts += 1;
            }
            let _ = ledger.latency_ms.record(call.ts_ms.saturating_sub(trigger_ms).max(1));
        }
        Ok(ledger)
    }

    /// Number of recipients accepted (at least once) for a campaign.
    pub fn accepted_recipients(&self, tenant: TenantId, campaign: CampaignId) -> u64 {
        self.accepted.get(&(tenant, campaign)).map(|b| b.iter().map(|w| u64::from(w.count_ones())).sum()).unwrap_or(0)
    }
}

/// The simulator provider.
pub struct Simulator {
    config: SimulatorConfig,
    ledger: Mutex<Ledger>,
    rng: Mutex<SmallRng>,
    log: Option<Mutex<std::fs::File>>,
    receipts: mpsc::Sender<(u64, Receipt)>,
}

fn pmid(key: &MessageKey) -> String {
    format!("sim.{}", key.id)
}

impl Simulator {
    /// Starts the simulator; receipts are produced on `receipts.inbound` through `topics`.
    pub fn start(
        config: SimulatorConfig,
        topics: Arc<dyn TopicBackend>,
        shutdown: pipeline::Shutdown,
    ) -> std::io::Result<Arc<Self>> {
        let mut ledger = Ledger::new();
        let mut replay = Vec::new();
        let log = match &config.calls_log {
            None => None,
            Some(path) => {
                for call in read_calls(path)? {
                    let Some(key) = MessageKey::from_callback(&call.callback) else { continue };
                    if call.provider_message_id.is_some() {
                        if !ledger.mark_accepted(&key, RecipientId(call.recipient)) {
                            ledger.duplicate_accepts += 1;
                        }
                        ledger.accepts += 1;
                        replay.push(key);
                    }
                    ledger.calls += 1;
                }
                Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
            }
        };
        let (tx, rx) = mpsc::channel(65_536);
        let sim = Arc::new(Self {
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
            config,
            ledger: Mutex::new(ledger),
            log,
            receipts: tx,
        });
        tokio::spawn(post_receipts(rx, topics, shutdown));
        let this = sim.clone();
        tokio::spawn(async move {
            for key in replay {
                this.schedule_receipts(&key).await;
            }
        });
        Ok(sim)
    }

    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn schedule_receipts(&self, key: &MessageKey) {
        let (final_status, error) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let roll: f64 = rng.random();
            if roll < self.config.receipt_failure_rate {
                (ReceiptStatus::Failed, Some("131026: message undeliverable".to_string()))
            } else if roll < self.config.receipt_failure_rate + self.config.read_share {
                (ReceiptStatus::Read, None)
            } else {
                (ReceiptStatus::Delivered, None)
            }
        };
        let due = now_ms() + self.config.receipt_delay.as_millis() as u64;
        let receipt = Receipt {
            provider: "simulator".into(),
            provider_message_id: pmid(key),
            key: Some(*key),
            status: final_status,
            at_ms: due,
            error,
        };
        let _ = self.receipts.send((due, receipt)).await;
    }

    /// Appends the call to the calls log, when there is one (the record is built only then).
    fn log_call(&self, call: impl FnOnce() -> CallRecord) {
        if let Some(log) = &self.log {
            if let Ok(mut line) = serde_json::to_vec(&call()) {
                line.push(b'\n');
                let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = file.write_all(&line) {
                    tracing::error!(error = %e, "simulator calls log write failed");
                }
            }
        }
    }
}

/// Posts due receipts in batches (receipts become due in FIFO order: the delay is constant).
async fn post_receipts(
    mut rx: mpsc::Receiver<(u64, Receipt)>,
    topics: Arc<dyn TopicBackend>,
    shutdown: pipeline::Shutdown,
) {
    let mut out = Emitter::new(topics);
    let mut pending: VecDeque<(u64, Receipt)> = VecDeque::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                next = rx.recv() => match next { Some(r) => pending.push_back(r), None => return },
                _ = shutdown.wait() => return,
            }
        }
        while let Ok(r) = rx.try_recv() {
            pending.push_back(r);
            if pending.len() >= 4_096 {
                break;
            }
        }
        let now = now_ms();
        let due: Vec<Receipt> = std::iter::from_fn(|| {
            pending.front().is_some_and(|(at, _)| *at <= now).then(|| pending.pop_front()).flatten()
        })
        .map(|(_, r)| r)
        .take(4_096)
        .collect();
        if due.is_empty() {
            if let Some((at, _)) = pending.front() {
                tokio::time::sleep(Duration::from_millis(at.saturating_sub(now).min(50))).await;
            }
            continue;
        }
        let mut by_tenant: HashMap<TenantId, Vec<Receipt>> = HashMap::new();
        for r in due {
            let tenant = r.key.map(|k| k.tenant).unwrap_or(TenantId(0));
            by_tenant.entry(tenant).or_default().push(r);
        }
        // Posted until the topics take them, as a provider retries its webhooks.
        let batches: Vec<ReceiptBatch> =
            by_tenant.into_iter().flat_map(|(tenant, receipts)| ReceiptBatch::by_campaign(tenant, receipts)).collect();
        loop {
            for b in &batches {
                let _ = out.emit(&topics::RECEIPTS, b);
            }
            match out.flush().await {
                Ok(_) => break,
                Err(e) => tracing::warn!(error = %e, "simulator could not post receipts; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

#[async_trait]
impl Provider for Simulator {
    fn name(&self) -> &str {
        "simulator"
    }

    async fn send(&self, sender: &str, message: &RenderedMessage) -> SendResult {
        let arrived = now_ms();
        let (roll, jitter) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            (rng.random::<f64>(), rng.random_range(0.0..=1.0) * self.config.jitter.as_secs_f64())
        };
        let key = message.key;
        let failure = {
            let mut ledger = self.ledger();
            let in_window = ledger.count_call(key.tenant, arrived);
            let over_rate = self.config.enforce_rate.is_some_and(|(rate, burst)| in_window > u64::from(rate + burst));
            if over_rate {
                Some(ProviderError::new(FailureClass::Pace, "130429", "Rate limit hit"))
            } else if roll < self.config.transient_failure_rate {
                Some(ProviderError::new(FailureClass::Retry, "503", "Service unavailable"))
            } else if roll < self.config.transient_failure_rate + self.config.permanent_failure_rate {
                Some(ProviderError::new(FailureClass::Permanent, "131026", "Message undeliverable"))
            } else {
                if !ledger.mark_accepted(&key, message.recipient) {
                    ledger.duplicate_accepts += 1;
                }
                ledger.accepts += 1;
                let t = ledger.tenants.entry(key.tenant).or_default();
                t.accepts += 1;
                let _ = ledger.latency_ms.record(arrived.saturating_sub(message.trigger_ms).max(1));
                None
            }
        };
        // Recorded before answering: the record survives even if Herald dies mid-call.
        self.log_call(|| CallRecord {
            ts_ms: arrived,
            sender: sender.to_string(),
            tenant: key.tenant.0,
            campaign: key.campaign.0,
            recipient: message.recipient.0,
            to: message.address.clone(),
            message_id: key.id.to_string(),
            callback: key.to_callback(),
            provider_message_id: failure.is_none().then(|| pmid(&key)),
            error_code: failure.as_ref().map(|e| e.code.clone()),
        });
        let latency = self.config.latency + Duration::from_secs_f64(jitter);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match failure {
            Some(e) => SendResult::Failed(e),
            None => {
                self.schedule_receipts(&key).await;
                SendResult::Accepted { provider_message_id: pmid(&key) }
            }
        }
    }

    async fn lookup(&self, _sender: &str, message: &RenderedMessage) -> Lookup {
        if self.ledger().is_accepted(&message.key, message.recipient) {
            Lookup::Accepted { provider_message_id: pmid(&message.key) }
        } else {
            Lookup::NotReceived
        }
    }
}
