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

/// One schemathesis run; returns its JSON report.
async fn run(st: &str, s: &TestServer, headers: &[String], seed: &str, report: &Path) -> Value {
    let mut cmd = tokio::process::Command::new(st);
    cmd.args(["run", &format!("{}/openapi.json", s.base)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", EXAMPLES, "--seed", seed, "--no-shrink", "--workers", "2"])
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
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap_or_default()).unwrap_or_else(|_| {
        panic!("no schemathesis report; output:\n{text}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let cases = &report["test_cases"];
    eprintln!(
        "schemathesis seed {seed}: {} requests generated, {} with failures, errors {}",
        cases["generated"], cases["with_failures"], report["errors"]
    );
    assert_eq!(cases["with_failures"], 0, "contract failures:\n{text}");
    assert_eq!(report["errors"], json!([]), "schema or run errors:\n{text}");
    assert_eq!(report["operations"]["errored"], 0, "{text}");
    report
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

    let dir = tempfile::tempdir().unwrap();
    let tenant_run =
        run(&st, &s, &[format!("Authorization: Bearer {admin}")], "11", &dir.path().join("tenant.json")).await;
    let platform = s.token("platform_admin", None);
    let headers = [format!("Authorization: Bearer {platform}"), format!("X-Herald-Tenant: {tenant}")];
    let platform_run = run(&st, &s, &headers, "12", &dir.path().join("platform.json")).await;
    let generated = tenant_run["test_cases"]["generated"].as_u64().unwrap()
        + platform_run["test_cases"]["generated"].as_u64().unwrap();
    assert!(generated >= 5_000, "only {generated} requests generated");
    s.stop().await;
}
