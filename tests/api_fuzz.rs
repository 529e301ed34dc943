//! The API against its own OpenAPI document, by property-based fuzzing: schemathesis generates
//! requests from `/openapi.json` (valid and invalid, every operation, stateful sequences along
//! the document's links) and checks that no answer is a server error, that every status, content
//! type and body is what the document says. Run with a tenant admin's token, then a platform
//! admin's (acting in a tenant through `X-Herald-Tenant`).
//!
//! Needs the `st` command (`pip install schemathesis`; `.ci/run` installs it). Outside CI the
//! test is skipped loudly when it is missing; in CI (`CI=true`) it fails instead.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// Examples per operation and run (two runs; about 80 operations x phases → > 5,000 requests).
const EXAMPLES: &str = "60";

fn schemathesis() -> Option<String> {
    let found = std::process::Command::new("st").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some("st".into());
    }
    let message = "schemathesis (`st`) is not installed: the OpenAPI contract fuzz run did NOT run";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true requires it; .ci/run installs it)");
    }
    eprintln!("\n!!! SKIPPED: {message}. Install it with `pip install schemathesis`.\n");
    None
}

/// A schemathesis run that must find nothing; returns its JSON report.
///
/// schemathesis occasionally trips over its own generator (a hypothesis strategy that fails its
/// validation while mutating a schema for negative cases: a "Runtime Error" whose traceback is
/// inside hypothesis, with no request sent). That is the fuzzer's bug, not a contract failure:
/// such a run is repeated once with another seed, loudly. Any failure of a check, and any other
/// error, fails at once; so does a second generator error.
async fn run(st: &str, s: &TestServer, headers: &[String], seed: u64, report: &Path) -> Value {
    let (report, text) = run_once(st, s, headers, seed, report).await;
    if !generator_error(&report, &text) {
        return assert_clean(report, &text);
    }
    let again = seed + 1_000;
    eprintln!(
        "\n!!! schemathesis seed {seed}: an internal generator error (not a contract failure); \
         running again with seed {again}\n{}",
        tail(&text)
    );
    let path = report_path(s, again);
    let (report, text) = run_once(st, s, headers, again, &path).await;
    assert_clean(report, &text)
}

/// Where a run's report goes (next to the others).
fn report_path(s: &TestServer, seed: u64) -> std::path::PathBuf {
    let dir = s.dir.path().join("fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("schemathesis-{seed}.json"))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Only schemathesis' own generator failed (see [`run`]).
fn generator_error(report: &Value, text: &str) -> bool {
    let errors = report["errors"].as_array().cloned().unwrap_or_default();
    !errors.is_empty()
        && report["test_cases"]["with_failures"] == 0
        && errors.iter().all(|e| e["title"] == "Runtime Error")
        && text.contains("hypothesis/strategies/_internal")
}

fn assert_clean(report: Value, text: &str) -> Value {
    assert_eq!(report["test_cases"]["with_failures"], 0, "contract failures:\n{text}");
    assert_eq!(report["errors"], json!([]), "schema or run errors:\n{text}");
    assert_eq!(report["operations"]["errored"], 0, "{text}");
    report
}

/// One schemathesis process: its JSON report and its output.
async fn run_once(st: &str, s: &TestServer, headers: &[String], seed: u64, report: &Path) -> (Value, String) {
    let mut cmd = tokio::process::Command::new(st);
    cmd.args(["run", &format!("{}/openapi.json", s.base)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", EXAMPLES, "--seed", &seed.to_string(), "--no-shrink", "--workers", "2"])
        // Event streams stay open for minutes by design (tests/api_security.rs and the console's
        // browser test check them).
        .args(["--exclude-path-regex", "/events$"])
        .args(["--report", "json", "--report-json-path"])
        .arg(report)
        .current_dir(report.parent().unwrap())
        .kill_on_drop(true);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(900), cmd.output())
        .await
        .expect("schemathesis took over 15 minutes")
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap_or_default())
        .unwrap_or_else(|_| panic!("no schemathesis report; output:\n{text}"));
    let cases = &report["test_cases"];
    eprintln!(
        "schemathesis seed {seed}: {} requests generated, {} with failures, errors {}",
        cases["generated"], cases["with_failures"], report["errors"]
    );
    (report, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_openapi_contract_under_fuzzing() {
    let Some(st) = schemathesis() else { return };
    let s = TestServer::start().await;
    let (tenant, admin, op) = tenant_with_admin(&s, "fuzz").await;
    // Something to find: a template, an audience, a sent campaign.
    let template =
        s.ok("POST", "/v1/templates", &op, Some(json!({"name": "t", "channel": "sms", "body": "Hi {{ name }}"}))).await;
    let aud = audience(&s, &op, 5, false).await;
    send(&s, &op, template["id"].as_u64().unwrap(), aud).await;

    let tenant_run = run(&st, &s, &[format!("Authorization: Bearer {admin}")], 11, &report_path(&s, 11)).await;
    let platform = s.token("platform_admin", None);
    let headers = [format!("Authorization: Bearer {platform}"), format!("X-Herald-Tenant: {tenant}")];
    let platform_run = run(&st, &s, &headers, 12, &report_path(&s, 12)).await;
    let generated = tenant_run["test_cases"]["generated"].as_u64().unwrap()
        + platform_run["test_cases"]["generated"].as_u64().unwrap();
    assert!(generated >= 5_000, "only {generated} requests generated");
    s.stop().await;
}
