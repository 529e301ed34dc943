//! `herald serve` as a real child process: SIGTERM in the middle of a campaign stops accepting,
//! drains and exits 0 within the drain grace; a restart on the same data dir resumes the campaign
//! and completes it with every recipient accepted exactly once by the provider; the process runs
//! with transparent huge pages off. With an OTLP endpoint configured, a campaign sent inside a
//! caller's trace is one trace through every stage.

mod common;

use common::free_port;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RECIPIENTS: usize = 5_000;

fn serve(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HERALD_JWT_SECRET", "sigterm-test-secret-0123456789")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn token(dir: &Path, role: &str, tenant: Option<u64>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["token", "--role", role, "--data-dir"])
        .arg(dir)
        .env("HERALD_JWT_SECRET", "sigterm-test-secret-0123456789");
    if let Some(t) = tenant {
        cmd.args(["--tenant", &t.to_string()]);
    }
    String::from_utf8(cmd.output().unwrap().stdout).unwrap().trim().to_string()
}

async fn call(http: &reqwest::Client, base: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let mut req = http.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{method} {path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tenant (1,000 msg/s) with an SMS campaign to `recipients`; its operator's token and id.
async fn campaign(http: &reqwest::Client, base: &str, dir: &Path, recipients: usize) -> (String, u64) {
    let admin = token(dir, "platform_admin", None);
    let t = call(http, base, "POST", "/v1/tenants", &admin, Some(json!({"name": "t", "rate_limit_per_s": 1000}))).await;
    let op = token(dir, "operator", t["id"].as_u64());
    let template = json!({"name": "t", "channel": "sms", "body": "Hi {{ name }}"});
    let tpl = call(http, base, "POST", "/v1/templates", &op, Some(template)).await;
    let a = call(http, base, "POST", "/v1/audiences", &op, Some(json!({"name": "a"}))).await;
    let rows: Vec<Value> =
        (0..recipients).map(|i| json!({"address": format!("+1202{:07}", 5_550_000 + i), "name": i})).collect();
    call(http, base, "POST", &format!("/v1/audiences/{}/recipients", a["id"]), &op, Some(Value::Array(rows))).await;
    let body = json!({"name": "c", "template_id": tpl["id"], "audience_id": a["id"]});
    let c = call(http, base, "POST", "/v1/campaigns", &op, Some(body)).await;
    (op, c["id"].as_u64().unwrap())
}

async fn wait_completed(http: &reqwest::Client, base: &str, op: &str, cid: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = call(http, base, "GET", &format!("/v1/campaigns/{cid}/progress"), op, None).await;
        if p["status"] == "completed" {
            return p;
        }
        assert!(Instant::now() < deadline, "campaign did not complete: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn accepted(dir: &Path) -> HashMap<String, u32> {
    common::accepted_per_message(&dir.join("provider-calls.jsonl"))
}

/// The binary turns transparent huge pages off for itself (`src/main.rs`); its peak RSS
/// depends on it. Kernels before 5.0 do not show the flag, and then this says so.
fn thp_is_off(pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    match status.lines().find_map(|l| l.strip_prefix("THP_enabled:")) {
        Some(flag) => assert_eq!(flag.trim(), "0", "transparent huge pages are on for herald serve"),
        None => eprintln!("!!! this kernel does not show THP_enabled: the huge-page switch is unchecked"),
    }
}

/// The store's fjall worker 0 runs at nice 10 (`WORKER_ZERO_NICE` in
/// `storage/src/embedded/workers.rs`): of the three fjall workers, the first spawned (the store
/// opens before the topics, and each pool spawns worker 0 first) and no other; all three stay in
/// the default class (`SCHED_IDLE` starved flushes: ARCHITECTURE.md).
fn store_worker_zero_is_lowered(pid: u32) {
    const SCHED_OTHER: &str = "0";
    let mut workers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "fjall:worker" {
            continue;
        }
        let tid: u32 = task.file_name().to_str().unwrap().parse().unwrap();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
        // Fields after the command's closing parenthesis start at field 3; the nice value is
        // field 19 and the policy field 41.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let (nice, policy) = (fields[19 - 3].to_string(), fields[41 - 3]);
        assert_eq!(policy, SCHED_OTHER, "fjall worker {tid} of herald serve is not in the default class");
        workers.push((tid, nice));
    }
    workers.sort_unstable();
    let nice: Vec<&str> = workers.iter().map(|(_, nice)| nice.as_str()).collect();
    assert_eq!(nice, ["10", "0", "0"], "fjall workers of herald serve (tid, nice): {workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_exits_zero_and_restart_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = serve(dir.path(), port);
    wait_ready(&http, &base).await;
    thp_is_off(child.id());
    store_worker_zero_is_lowered(child.id());

    let (op, cid) = campaign(&http, &base, dir.path(), RECIPIENTS).await;
    call(&http, &base, "POST", &format!("/v1/campaigns/{cid}/send"), &op, None).await;

    // SIGTERM once the provider has seen a fifth of the campaign (1,000 msg/s: ~5 s in all).
    while accepted(dir.path()).len() < RECIPIENTS / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(20), "serve did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    let sent_before_restart = accepted(dir.path()).len();
    assert!(sent_before_restart < RECIPIENTS, "the campaign was interrupted mid-way");

    // Restart: the campaign resumes and completes; nobody skipped, nobody sent twice.
    let mut child = serve(dir.path(), port);
    wait_ready(&http, &base).await;
    let p = wait_completed(&http, &base, &op, cid).await;
    assert_eq!(p["delivered"], RECIPIENTS as u64, "{p}");
    let calls = accepted(dir.path());
    assert_eq!(calls.len(), RECIPIENTS);
    assert!(calls.values().all(|n| *n == 1), "a recipient was accepted twice");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp_when_configured() {
    use std::sync::{Arc, Mutex};
    // A stand-in OTLP/HTTP collector: records every POST /v1/traces body.
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body.to_vec());
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("HERALD_JWT_SECRET", "sigterm-test-secret-0123456789")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    // A campaign sent by a request that continues the caller's trace.
    let (op, cid) = campaign(&http, &base, dir.path(), 300).await;
    let traced = http
        .post(format!("{base}/v1/campaigns/{cid}/send"))
        .bearer_auth(&op)
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .unwrap();
    assert!(traced.status().is_success(), "{}", traced.status());
    wait_completed(&http, &base, &op, cid).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "no spans reached the OTLP endpoint");

    // The export holds one trace from the request through every stage: a deliver step whose
    // parent is a throttle step, whose parent is a render step, whose parent is a chunk step,
    // whose chain leads to the request's span, which continues the caller's trace.
    let trace_id = [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];
    let spans: Vec<otlp::Span> =
        bodies.iter().flat_map(|b| otlp::spans(b)).filter(|s| s.trace_id == trace_id).collect();
    let names: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for stage in ["POST /v1/campaigns/{id}/send", "chunk", "render", "throttle", "deliver", "reconcile"] {
        assert!(names.contains(stage), "no {stage} span in the campaign's trace: {names:?}");
    }
    let parent = |s: &otlp::Span| spans.iter().find(|p| p.span_id == s.parent_span_id);
    // (Deliver's first step: its records came straight from throttle.)
    let deliver = spans.iter().find(|s| s.name == "deliver").unwrap();
    let chain: Vec<&str> = std::iter::successors(Some(deliver), |s| parent(s)).map(|s| s.name.as_str()).collect();
    assert_eq!(chain.get(..4), Some(&["deliver", "throttle", "render", "chunk"][..]), "{chain:?}");
    assert_eq!(chain.last(), Some(&"POST /v1/campaigns/{id}/send"), "{chain:?}");
    let root = spans.iter().find(|s| s.name == "POST /v1/campaigns/{id}/send").unwrap();
    assert_eq!(root.parent_span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7], "the caller's span");
}

/// Just enough of OTLP's protobuf (`ExportTraceServiceRequest`) to read spans' ids and names.
mod otlp {
    pub struct Span {
        pub trace_id: Vec<u8>,
        pub span_id: Vec<u8>,
        pub parent_span_id: Vec<u8>,
        pub name: String,
    }

    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }

    /// The length-delimited fields of a message, as (field number, bytes); others skipped.
    fn fields(b: &[u8]) -> Vec<(u64, &[u8])> {
        let (mut i, mut out) = (0, Vec::new());
        while i < b.len() {
            let key = varint(b, &mut i);
            match key & 7 {
                0 => {
                    varint(b, &mut i);
                }
                1 => i += 8,
                5 => i += 4,
                2 => {
                    let len = varint(b, &mut i) as usize;
                    out.push((key >> 3, &b[i..i + len]));
                    i += len;
                }
                t => panic!("wire type {t}"),
            }
        }
        out
    }

    fn field<'a>(fields: &[(u64, &'a [u8])], n: u64) -> &'a [u8] {
        fields.iter().find(|(f, _)| *f == n).map(|(_, b)| *b).unwrap_or_default()
    }

    pub fn spans(body: &[u8]) -> Vec<Span> {
        let mut out = Vec::new();
        for (_, resource) in fields(body).into_iter().filter(|(f, _)| *f == 1) {
            for (_, scope) in fields(resource).into_iter().filter(|(f, _)| *f == 2) {
                for (_, span) in fields(scope).into_iter().filter(|(f, _)| *f == 2) {
                    let f = fields(span);
                    out.push(Span {
                        trace_id: field(&f, 1).to_vec(),
                        span_id: field(&f, 2).to_vec(),
                        parent_span_id: field(&f, 4).to_vec(),
                        name: String::from_utf8_lossy(field(&f, 5)).into_owned(),
                    });
                }
            }
        }
        out
    }
}
