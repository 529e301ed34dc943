//! `herald mock-provider`: a standalone server speaking the WhatsApp Cloud API and a
//! Twilio-shaped SMS API, behaving like the real ones where Herald's promises are at stake:
//!
//! - **Throughput** per sender (phone_number_id / SMS from-number): at most `--mps` + 10%
//!   burst (at least 1) accepted calls in any sliding 1-second window; a call beyond it is
//!   refused with 130429 (SMS: 20429). A window rather than a token bucket, so the limit is
//!   exactly what the acceptance measures and arrival jitter of a few ms is not punished.
//! - **Pair rate**: a second accepted message to the same recipient from the same sender
//!   within `--pair-interval-s` is refused with 131056.
//! - **Injected errors** (`--inject CODE:SHARE`), e.g. `131026:0.01`, for failure drills:
//!   exactly that share of calls, evenly spread.
//! - **Receipts**: accepted messages get `wamid.`/`SM` ids, then signed status webhooks —
//!   sent → delivered → read (`--read-share`), or sent → failed (`--failure-rate`) — posted
//!   after realistic delays, in batches, retried until the receiver answers 2xx.
//! - **Calls log** (`--calls-log`): one JSON line per call, written before answering:
//!   `{ts_ms, phone_number_id, to, message_id, wamid}` or `{..., error_code}` when refused.
//!   `message_id` comes from `biz_opaque_callback_data` (SMS: the status callback's `cb`).
//!
//! It is not: a full API emulation (templates are not checked against an approved list).

pub mod calls;
mod receipts;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use receipts::{Pending, Receipts, Target};
use schemas::helpers::SlidingWindow;
use schemas::{now_ms, MessageKey};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The mock's settings; also the `herald mock-provider` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: String,
    /// Where WhatsApp status webhooks go (e.g. http://127.0.0.1:8080/webhooks/whatsapp).
    #[arg(long)]
    pub webhook_url: String,
    /// Signs WhatsApp webhooks (X-Hub-Signature-256); the tenant's `app_secret`.
    #[arg(long)]
    pub app_secret: String,
    /// Messages per second per phone_number_id / from-number (burst 10%).
    #[arg(long, default_value_t = 80)]
    pub mps: u32,
    /// Minimum seconds between two messages to the same recipient (131056 otherwise).
    #[arg(long, default_value_t = 6.0)]
    pub pair_interval_s: f64,
    /// Latency of each API call.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Share of accepted messages whose final status is `failed` (131026).
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Share of delivered messages that are also `read`.
    #[arg(long, default_value_t = 0.5)]
    pub read_share: f64,
    /// Refuse a share of calls with an error code, e.g. `--inject 131026:0.01` (repeatable);
    /// spread evenly (every 100th call there), not at random.
    #[arg(long, value_parser = parse_inject)]
    pub inject: Vec<(i64, f64)>,
    /// Share of accepted calls whose answer is held back `--stall-ms` (the client times out
    /// although the message was accepted and its receipts will come).
    #[arg(long, default_value_t = 0.0)]
    pub stall_share: f64,
    #[arg(long, default_value_t = 60_000)]
    pub stall_ms: u64,
    /// Append every call here as a JSON line.
    #[arg(long)]
    pub calls_log: Option<PathBuf>,
}

impl MockArgs {
    /// Checks what clap's types do not.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, share) in [
            ("--failure-rate", self.failure_rate),
            ("--read-share", self.read_share),
            ("--stall-share", self.stall_share),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&share), "{name} must be between 0 and 1");
        }
        anyhow::ensure!(self.mps > 0, "--mps must be positive");
        Ok(())
    }
}

impl Default for MockArgs {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            webhook_url: String::new(),
            app_secret: String::new(),
            mps: 80,
            pair_interval_s: 6.0,
            latency_ms: 20,
            failure_rate: 0.0,
            read_share: 0.5,
            inject: Vec::new(),
            stall_share: 0.0,
            stall_ms: 0,
            calls_log: None,
        }
    }
}

/// Parses `CODE:SHARE` (e.g. `131026:0.01`).
pub fn parse_inject(raw: &str) -> anyhow::Result<(i64, f64)> {
    let (code, share) = raw.split_once(':').context("--inject takes CODE:SHARE, e.g. 131026:0.01")?;
    let share: f64 = share.parse().context("--inject share must be a number")?;
    anyhow::ensure!((0.0..=1.0).contains(&share), "--inject share must be between 0 and 1");
    Ok((code.parse().context("--inject code must be a number")?, share))
}

/// One line of the calls log.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub ts_ms: u64,
    pub channel: &'static str,
    pub phone_number_id: String,
    pub to: String,
    pub message_id: String,
    /// The raw callback data (`biz_opaque_callback_data`), echoed in receipts.
    pub callback: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wamid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
}

/// Counters served at `GET /mock/stats`.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Stats {
    pub calls: u64,
    pub accepted: u64,
    pub refused: HashMap<String, u64>,
    /// Accepted calls whose message_id had been accepted before.
    pub duplicate_message_ids: u64,
    /// Accepted calls whose answer was held back (`--stall-share`).
    pub stalled: u64,
    pub webhooks_posted: u64,
    pub statuses_posted: u64,
    pub webhook_failures: u64,
}

struct Mock {
    args: MockArgs,
    windows: Mutex<HashMap<String, SlidingWindow>>,
    pairs: Mutex<HashMap<(String, String), Instant>>,
    seen: Mutex<std::collections::HashSet<String>>,
    stats: Mutex<Stats>,
    log: Option<Mutex<std::fs::File>>,
    receipts: Arc<Receipts>,
    next_id: AtomicU64,
    /// Calls seen by each `--inject` rule.
    injected: Vec<AtomicU64>,
}

/// A running mock provider.
pub struct MockProvider {
    pub addr: std::net::SocketAddr,
    state: Arc<Mock>,
    task: tokio::task::JoinHandle<()>,
}

impl MockProvider {
    pub async fn start(args: MockArgs) -> anyhow::Result<Self> {
        let log = match &args.calls_log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )),
            None => None,
        };
        let listener =
            tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        let receipts = Receipts::start(args.webhook_url.clone(), args.app_secret.clone());
        if let Some(path) = &args.calls_log {
            // A restarted provider still owes receipts for what it accepted before (Meta retries
            // webhooks for days): the final status of every accepted WhatsApp call is posted
            // again; Herald applies them idempotently and resolves them by wamid.
            let owed = receipts::owed_from_log(path);
            tracing::info!(owed = owed.len(), "re-posting final statuses for calls accepted before a restart");
            for p in owed {
                receipts.push(p);
            }
        }
        let injected = args.inject.iter().map(|_| AtomicU64::new(0)).collect();
        let state = Arc::new(Mock {
            args,
            windows: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            seen: Mutex::new(Default::default()),
            stats: Mutex::new(Stats::default()),
            log,
            receipts,
            next_id: AtomicU64::new(1),
            injected,
        });
        let app = Router::new()
            .route("/{version}/{phone_number_id}/messages", post(whatsapp))
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(sms))
            .route("/mock/stats", get(stats))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "mock provider stopped");
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.state.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let r = self.state.receipts.stats();
        (s.webhooks_posted, s.statuses_posted, s.webhook_failures) = (r.0, r.1, r.2);
        s
    }

    pub fn stop(self) {
        self.task.abort();
        self.state.receipts.stop();
    }
}

/// Runs until SIGTERM / Ctrl-C.
pub async fn run(args: MockArgs) -> anyhow::Result<()> {
    let mock = MockProvider::start(args.clone()).await?;
    eprintln!(
        "herald mock-provider listening on http://{} ({} msg/s per sender, pair interval {} s, webhooks → {})",
        mock.addr, args.mps, args.pair_interval_s, args.webhook_url
    );
    crate::wait_for_signal().await;
    mock.stop();
    Ok(())
}

/// What one call decided.
enum Verdict {
    Accept(String),
    Refuse(i64, String),
}

impl Mock {
    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016X}{:08X}", now_ms(), n)
    }

    /// The throughput, pair-rate and injected checks shared by both APIs.
    fn decide(&self, sender: &str, to: &str, message_id: &str, throughput_code: i64, id_prefix: &str) -> Verdict {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(sender.to_string()).or_default();
        let limit = self.args.mps.max(1) + (self.args.mps / 10).max(1);
        if window.count(now) >= limit as usize {
            return Verdict::Refuse(throughput_code, "throughput limit reached for this sender".into());
        }
        // Evenly spread, not random: exactly `share` of the calls, so a drill always hits.
        for ((code, share), seen) in self.args.inject.iter().zip(&self.injected) {
            let n = seen.fetch_add(1, Ordering::Relaxed) as f64;
            if ((n + 1.0) * share).floor() > (n * share).floor() {
                return Verdict::Refuse(*code, format!("injected error {code}"));
            }
        }
        {
            let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
            let key = (sender.to_string(), to.to_string());
            let interval = Duration::from_secs_f64(self.args.pair_interval_s.max(0.0));
            if pairs.get(&key).is_some_and(|last| now.duration_since(*last) < interval) {
                return Verdict::Refuse(131056, "pair rate limit hit".into());
            }
            pairs.insert(key, now);
            if pairs.len() > 1_000_000 {
                pairs.retain(|_, t| now.duration_since(*t) < interval);
            }
        }
        window.record(now);
        let fresh = self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(message_id.to_string());
        if !fresh {
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).duplicate_message_ids += 1;
        }
        Verdict::Accept(self.id(id_prefix))
    }

    /// Logs a call (before it is answered) and counts it.
    fn record(&self, call: &Call) {
        {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.calls += 1;
            match call.error_code {
                Some(code) => *stats.refused.entry(code.to_string()).or_default() += 1,
                None => stats.accepted += 1,
            }
        }
        if let Some(log) = &self.log {
            let mut line = serde_json::to_vec(call).unwrap_or_default();
            line.push(b'\n');
            let _ = log.lock().unwrap_or_else(|p| p.into_inner()).write_all(&line);
        }
    }

    /// Schedules the statuses an accepted message will report.
    fn schedule(&self, target: Target, id: String, message_id: String, to: String) {
        let mut rng = rand::rng();
        let now = now_ms();
        let sent = now + rng.random_range(50..250);
        let mut statuses = vec![(sent, "sent")];
        if rng.random_bool(self.args.failure_rate.clamp(0.0, 1.0)) {
            statuses.push((sent + rng.random_range(200..1_000), "failed"));
        } else {
            let delivered = sent + rng.random_range(200..1_000);
            statuses.push((delivered, "delivered"));
            if rng.random_bool(self.args.read_share.clamp(0.0, 1.0)) {
                statuses.push((delivered + rng.random_range(500..2_000), "read"));
            }
        }
        for (due_ms, status) in statuses {
            self.receipts.push(Pending {
                due_ms,
                target: target.clone(),
                id: id.clone(),
                status,
                callback: message_id.clone(),
                to: to.clone(),
                attempts: 0,
            });
        }
    }

    async fn latency(&self) {
        let base = self.args.latency_ms;
        let jitter = rand::rng().random_range(0..=base / 4 + 1);
        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
    }
}

fn graph_error(code: i64, message: &str) -> Response {
    // An injected 5xx is an outage answer, not a Graph error envelope.
    if let Some(status) = u16::try_from(code).ok().filter(|c| (500..600).contains(c)) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, "upstream unavailable").into_response();
    }
    let body = json!({"error": {"message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message}, "fbtrace_id": "mock"}});
    let status = if code == 4 || code == 80007 || code == 130429 {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(body)).into_response()
}

async fn whatsapp(
    State(mock): State<Arc<Mock>>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ").is_some_and(|t| !t.is_empty()));
    if !authorized {
        return graph_error(190, "Invalid OAuth access token");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(100, "Invalid parameter: body is not JSON");
    };
    let to = request["to"].as_str().unwrap_or_default().to_string();
    let callback = request["biz_opaque_callback_data"].as_str().unwrap_or_default().to_string();
    if to.is_empty() || request["template"]["name"].as_str().is_none() {
        return graph_error(100, "Invalid parameter: to and template.name are required");
    }
    let message_id = MessageKey::from_callback(&callback).map(|k| k.id.to_string()).unwrap_or(callback.clone());
    let verdict = mock.decide(&phone_number_id, &to, &message_id, 130429, "wamid.");
    let ts_ms = now_ms();
    mock.latency().await;
    let mut call = Call {
        ts_ms,
        channel: "whatsapp",
        phone_number_id: phone_number_id.clone(),
        to: to.clone(),
        message_id: message_id.clone(),
        callback: callback.clone(),
        wamid: None,
        error_code: None,
    };
    match verdict {
        Verdict::Accept(wamid) => {
            call.wamid = Some(wamid.clone());
            mock.record(&call);
            mock.schedule(Target::WhatsApp { phone_number_id }, wamid.clone(), callback, to.clone());
            if rand::rng().random_bool(mock.args.stall_share.clamp(0.0, 1.0)) {
                mock.stats.lock().unwrap_or_else(|p| p.into_inner()).stalled += 1;
                tokio::time::sleep(Duration::from_millis(mock.args.stall_ms)).await;
            }
            Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid, "message_status": "accepted"}]}))
            .into_response()
        }
        Verdict::Refuse(code, message) => {
            call.error_code = Some(code);
            mock.record(&call);
            graph_error(code, &message)
        }
    }
}

fn twilio_error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "status": status.as_u16()}))).into_response()
}

async fn sms(State(mock): State<Arc<Mock>>, Path(sid): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    use base64::Engine as _;
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').filter(|(user, _)| *user == sid).map(|(_, token)| token.to_string()));
    let Some(token) = token else {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let (Some(to), Some(from)) = (form.get("To").cloned(), form.get("From").cloned()) else {
        return twilio_error(StatusCode::BAD_REQUEST, 21604, "'To' and 'From' are required");
    };
    let callback_url = form.get("StatusCallback").cloned();
    let callback = callback_url
        .as_deref()
        .and_then(|u| u.split_once('?'))
        .and_then(|(_, q)| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "cb").map(|(_, v)| v.into_owned()))
        .unwrap_or_default();
    let message_id = MessageKey::from_callback(&callback).map(|k| k.id.to_string()).unwrap_or_else(|| callback.clone());
    let verdict = mock.decide(&from, &to, &message_id, 20429, "SM");
    let ts_ms = now_ms();
    mock.latency().await;
    let mut call = Call {
        ts_ms,
        channel: "sms",
        phone_number_id: from.clone(),
        to: to.clone(),
        message_id,
        callback,
        wamid: None,
        error_code: None,
    };
    match verdict {
        Verdict::Accept(message_sid) => {
            call.wamid = Some(message_sid.clone());
            mock.record(&call);
            if let Some(url) = callback_url {
                let target = Target::Sms { url, account_sid: sid.clone(), auth_token: token, from: from.clone() };
                mock.schedule(target, message_sid.clone(), String::new(), to.clone());
            }
            (StatusCode::CREATED, Json(json!({"sid": message_sid, "status": "queued", "to": to, "from": from})))
                .into_response()
        }
        Verdict::Refuse(code, message) => {
            call.error_code = Some(code);
            mock.record(&call);
            let status = if code == 20429 { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::BAD_REQUEST };
            twilio_error(status, code, &message)
        }
    }
}

async fn stats(State(mock): State<Arc<Mock>>) -> Json<Stats> {
    let mut s = mock.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let r = mock.receipts.stats();
    (s.webhooks_posted, s.statuses_posted, s.webhook_failures) = (r.0, r.1, r.2);
    Json(s)
}
