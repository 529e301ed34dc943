//! The operator console in a real browser: Debian's `chromium`, driven through `chromedriver`
//! (WebDriver) against a `herald serve` on a free port. An operator signs in with a token,
//! uploads a CSV with bad rows and reads their line numbers, writes a template and watches its
//! preview and compile errors, sends a 5,000-recipient campaign and watches it reach
//! `completed` without reloading, pauses and resumes a paced campaign (rate to 0 and back),
//! cancels it, and redrives a dead letter. A viewer sees no button that changes anything (and
//! the server refuses anyway); a second tenant sees none of the first tenant's objects.
//! Screenshots of each page land in `<target tmp>/console-screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (`.ci/run` installs them): outside CI the test skips
//! with a loud line when they are missing; in CI it fails.

mod common;

use common::browser::browser;
use common::{tenant, tenant_with_admin, Api, TestServer};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RECIPIENTS: usize = 5_000;

struct Console {
    client: Client,
    base: String,
    shots: PathBuf,
    n: std::cell::Cell<u32>,
}

impl Console {
    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let found = self.client.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(css)).await;
        match found {
            Ok(el) => el,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                let source = self.client.source().await.unwrap_or_default();
                if let Ok(png) = self.client.screenshot().await {
                    let _ = std::fs::write(self.shots.join("failure.png"), png);
                }
                panic!("no element {css} on {url}: {e}\n{source}")
            }
        }
    }

    async fn exists(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// Waits until the element's text satisfies `check`; returns it.
    async fn text_until(&self, css: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let els = self.client.find_all(Locator::Css(css)).await.unwrap();
            let text = match els.first() {
                Some(e) => e.text().await.unwrap_or_default(),
                None => String::new(),
            };
            if check(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} never matched; last text: {text:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Clicks an action and confirms it in the console's dialog.
    async fn click_confirmed(&self, css: &str) {
        self.click(css).await;
        self.click("dialog #confirm-yes").await;
    }

    async fn screenshot(&self, name: &str) {
        let n = self.n.get() + 1;
        self.n.set(n);
        let png = self.client.screenshot().await.unwrap();
        assert!(png.len() > 1_000, "an empty screenshot of {name}");
        std::fs::write(self.shots.join(format!("{n:02}-{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.client.delete_all_cookies().await.unwrap();
        self.goto("/console/signin").await;
        self.fill("#token", token).await;
        self.click("#signin").await;
        self.find("#who").await;
        self.text_until("#who", Duration::from_secs(10), |t| !t.is_empty()).await;
    }
}

/// The current rate shown on a campaign page ("Current rate 12.5/s …").
fn shown_rate(text: &str) -> f64 {
    text.strip_prefix("Current rate ").and_then(|r| r.split('/').next()).and_then(|r| r.parse().ok()).unwrap_or(-1.0)
}

/// A CSV of `RECIPIENTS` good rows with two bad ones among them (lines 3 and 1,003).
fn csv(dir: &std::path::Path) -> PathBuf {
    let mut text = String::from("address,name\n");
    for i in 0..RECIPIENTS {
        if i == 1 {
            text.push_str("not-a-phone,Bad\n");
        }
        if i == 1_000 {
            text.push_str(",Empty\n");
        }
        text.push_str(&format!("+1202{:07},Person {i}\n", 5_550_000 + i));
    }
    let path = dir.join("audience.csv");
    std::fs::write(&path, text).unwrap();
    path
}

async fn api_campaign(s: &Api, op: &str, template: u64, audience: u64, rate: Option<u32>) -> u64 {
    let body = json!({"name": "paced", "template_id": template, "audience_id": audience, "rate_limit_per_s": rate});
    s.ok("POST", "/v1/campaigns", op, Some(body)).await["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_campaigns_from_the_console() {
    let Some((_driver, client)) = browser("the console's browser test").await else { return };
    // 2% of calls fail permanently, so the DLQ has letters to redrive.
    let s = TestServer::start_with(|c| c.simulator.permanent_failure_rate = 0.02).await;
    let (a, op) = tenant(&s, "acme", Some(1_000)).await;
    let (_b, op_b) = tenant(&s, "other", Some(1_000)).await;
    let viewer = s.token("viewer", Some(a));
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let c = Console { client, base: s.base.clone(), shots: shots.clone(), n: Default::default() };

    // A page without a session goes to the sign-in form; a bad token is refused in words.
    c.goto("/console/campaigns").await;
    c.find("#token").await;
    c.fill("#token", "not-a-token").await;
    c.click("#signin").await;
    assert!(c.text("#signin-error").await.contains("refused"));
    c.screenshot("signin-refused").await;

    c.sign_in(&op).await;
    assert!(c.text("#who").await.contains("operator"));
    c.screenshot("campaigns-empty").await;

    // Audience: create, upload a CSV with two bad rows, read their line numbers.
    c.goto("/console/audiences").await;
    c.fill("#audience-name", "Spring list").await;
    c.click("#create-audience").await;
    let file = csv(s.dir.path());
    c.find("#csv-file").await.send_keys(file.to_str().unwrap()).await.unwrap();
    let imported = c.text_until("#imported", Duration::from_secs(60), |t| !t.is_empty()).await;
    assert_eq!(imported, "5,000");
    assert_eq!(c.text("#rejected").await, "2");
    let mut lines = Vec::new();
    for cell in c.client.find_all(Locator::Css("#rejected-rows tbody td:first-child")).await.unwrap() {
        lines.push(cell.text().await.unwrap());
    }
    assert_eq!(lines, ["3", "1003"], "the bad rows' line numbers");
    assert_eq!(c.text("#recipient-count").await, "5,000");
    c.screenshot("audience-import-report").await;
    let audience = s.ok("GET", "/v1/audiences", &op, None).await["items"][0]["id"].as_u64().unwrap();

    // Template: live preview for the sample recipient, compile errors as you type.
    c.goto("/console/templates/new").await;
    c.fill("#template-name", "Spring sale").await;
    c.fill("#template-body", "Hi {{ name }}, spring sale today").await;
    c.text_until("#preview-text", Duration::from_secs(10), |t| t == "Hi Ada, spring sale today").await;
    c.fill("#template-body", "Hi {{ name").await;
    let error = c.text_until("#template-error", Duration::from_secs(10), |t| !t.is_empty()).await;
    assert!(error.to_lowercase().contains("body"), "the compile error names the field: {error}");
    c.screenshot("template-error").await;
    c.fill("#template-body", "Hi {{ name }}!").await;
    c.text_until("#preview-text", Duration::from_secs(10), |t| t == "Hi Ada!").await;
    c.screenshot("template-preview").await;
    c.click("#save-template").await;
    c.text_until("h1", Duration::from_secs(10), |t| t == "Spring sale").await;
    let template = s.ok("GET", "/v1/templates", &op, None).await["items"][0]["id"].as_u64().unwrap();

    // A 5,000-recipient campaign, created and sent from the form; counters reach completed live.
    c.goto("/console/campaigns/new").await;
    c.fill("#campaign-name", "Spring blast").await;
    c.click("#create-campaign").await;
    c.text_until("#status", Duration::from_secs(120), |t| t == "completed").await;
    let label = c.text("#progress-label").await;
    assert_eq!(label, "5,000 of 5,000 finished", "{label}");
    c.text_until("#senders", Duration::from_secs(10), |t| t.contains("simulator") || t.contains("Sender")).await;
    c.screenshot("campaign-completed").await;
    let blast = s.ok("GET", "/v1/campaigns", &op, None).await["items"][0]["id"].as_u64().unwrap();
    let p = s.ok("GET", &format!("/v1/campaigns/{blast}/progress"), &op, None).await;
    assert_eq!(p["status"], "completed");
    let failed = p["failed"].as_u64().unwrap() + p["dead_lettered"].as_u64().unwrap();
    assert!(failed > 0, "some permanent failures to redrive: {p}");

    // The list shows it with its counters.
    c.goto("/console/campaigns").await;
    c.text_until(&format!("#status-{blast}"), Duration::from_secs(10), |t| t == "completed").await;
    c.screenshot("campaign-list").await;

    // A later visit draws the whole run from the stored timeline: live figures alone give a
    // finished campaign at most two points (the progress read and the stream's last event).
    c.goto(&format!("/console/campaigns/{blast}")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let points = c
            .client
            .execute(
                "const l = document.querySelector('polyline.sent'); return l ? l.points.numberOfItems : 0;",
                vec![],
            )
            .await
            .unwrap();
        if points.as_u64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the chart did not load the campaign's timeline: {points} point(s)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.screenshot("campaign-timeline").await;

    // A paced campaign: send, pause (rate to 0), resume (rate back), cancel.
    let paced = api_campaign(&s, &op, template, audience, Some(20)).await;
    c.goto(&format!("/console/campaigns/{paced}")).await;
    c.click_confirmed("#send-campaign").await;
    c.text_until("#rate", Duration::from_secs(30), |t| shown_rate(t) > 0.0).await;
    c.click_confirmed("#pause-campaign").await;
    c.text_until("#status", Duration::from_secs(10), |t| t == "paused").await;
    c.text_until("#rate", Duration::from_secs(45), |t| shown_rate(t) == 0.0).await;
    c.screenshot("campaign-paused").await;
    c.click_confirmed("#resume-campaign").await;
    c.text_until("#status", Duration::from_secs(10), |t| t == "running").await;
    c.text_until("#rate", Duration::from_secs(30), |t| shown_rate(t) > 0.0).await;
    c.screenshot("campaign-resumed").await;
    c.click_confirmed("#cancel-campaign").await;
    c.text_until("#status", Duration::from_secs(30), |t| t == "cancelled").await;
    assert!(!c.exists("#pause-campaign").await && !c.exists("#resume-campaign").await);
    c.screenshot("campaign-cancelled").await;

    // Dead letters: filter by campaign and code, redrive one.
    c.goto(&format!("/console/dlq?campaign={blast}&code=no_such_code")).await;
    c.find("#no-letters").await;
    let letters = s.ok("GET", &format!("/v1/dlq?campaign_id={blast}&limit=1000"), &op, None).await;
    let code = letters["items"][0]["code"].as_str().unwrap().to_string();
    assert!(!code.is_empty(), "{letters}");
    c.goto(&format!("/console/dlq?campaign={blast}&code={code}")).await;
    let first = c.find("#letters tbody tr").await;
    let message = first.attr("data-message").await.unwrap().unwrap();
    let before =
        letters["items"].as_array().unwrap().iter().find(|l| l["message_id"] == message.as_str()).cloned().unwrap();
    first.find(Locator::Css("input.pick")).await.unwrap().click().await.unwrap();
    c.screenshot("dlq").await;
    c.click_confirmed("#redrive-selected").await;
    let result = c.text_until("#redrive-result", Duration::from_secs(10), |t| t.starts_with("Redriven")).await;
    assert!(result.starts_with("Redriven: 1."), "{result}");
    // Reconcile clears the letter once the new attempt's outcome lands (or records a newer
    // failure: 2% of attempts fail permanently).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = s.ok("GET", &format!("/v1/dlq?campaign_id={blast}&limit=1000"), &op, None).await;
        let letter = left["items"].as_array().unwrap().iter().find(|l| l["message_id"] == message.as_str()).cloned();
        match letter {
            None => break,
            Some(l) if l["at_ms"] != before["at_ms"] => break,
            Some(l) => assert!(Instant::now() < deadline, "the redriven letter stayed as it was: {l}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A viewer sees no button that changes anything, and the server refuses anyway.
    c.client.execute("document.getElementById('signout').click()", vec![]).await.unwrap();
    c.find("#token").await;
    c.sign_in(&viewer).await;
    c.goto("/console/campaigns").await;
    c.find("#campaigns").await;
    assert!(!c.exists("#new-campaign").await);
    c.goto(&format!("/console/campaigns/{paced}")).await;
    c.find("#progress").await;
    c.goto(&format!("/console/campaigns/{blast}")).await;
    c.text_until("#status", Duration::from_secs(10), |t| t == "completed").await;
    assert!(c.find_all_buttons_in("#actions").await == 0);
    c.goto(&format!("/console/audiences/{audience}")).await;
    c.find("#recipient-count").await;
    assert!(!c.exists("#csv-file").await);
    let refused: Value = c
        .client
        .execute_async(
            "const done = arguments[0];
             fetch('/console/session').then(r => r.json()).then(s =>
               fetch('/v1/audiences', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf}, body: '{\"name\": \"x\"}'}))
             .then(r => done(r.status))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(403), "the server refuses a viewer's change");
    c.screenshot("viewer").await;

    // A change without the session's CSRF token is refused.
    let forged: Value = c
        .client
        .execute_async(
            "const done = arguments[0];
             fetch('/v1/audiences', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{\"name\": \"x\"}'})
             .then(r => r.json()).then(b => done(b.error.code))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged, json!("csrf_failed"));

    // Another tenant sees none of it.
    c.sign_in(&op_b).await;
    c.goto("/console/campaigns").await;
    c.text_until("main", Duration::from_secs(10), |t| t.contains("No campaigns yet.")).await;
    c.goto("/console/audiences").await;
    c.text_until("main", Duration::from_secs(10), |t| t.contains("No audiences yet.")).await;
    c.goto("/console/templates").await;
    c.text_until("main", Duration::from_secs(10), |t| t.contains("No templates yet.")).await;
    c.goto("/console/dlq").await;
    c.find("#no-letters").await;
    c.goto(&format!("/console/campaigns/{blast}")).await;
    let alert = c.text_until("#alert", Duration::from_secs(10), |t| !t.is_empty()).await;
    assert!(alert.contains("no longer exists"), "{alert}");
    c.screenshot("other-tenant").await;
    eprintln!("console screenshots: {}", shots.display());
    c.client.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_keeps_suppressions_and_providers_from_the_console() {
    let Some((_driver, client)) = browser("the console's browser test").await else { return };
    let s = TestServer::start().await;
    let (a, admin, _op) = tenant_with_admin(&s, "acme").await;
    let (_b, _admin_b, op_b) = tenant_with_admin(&s, "other").await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-settings-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let c = Console { client, base: s.base.clone(), shots: shots.clone(), n: Default::default() };
    c.sign_in(&admin).await;

    // Suppressions with the keyboard only: type the address, press Enter.
    c.goto("/console/suppressions").await;
    let input = c.find("#suppress-address").await;
    input.send_keys("+12025550199\u{E007}").await.unwrap();
    c.text_until("#suppressions", Duration::from_secs(10), |t| t.contains("+12025550199")).await;
    let listed = s.ok("GET", "/v1/suppressions", &admin, None).await;
    assert_eq!(listed["items"], json!(["+12025550199"]));
    c.screenshot("suppressions").await;

    // A webhook provider: its secret is sent once and afterwards shown as "set", never echoed.
    c.goto("/console/providers").await;
    c.fill("#webhook-url", "http://127.0.0.1:9/hook").await;
    c.fill("#webhook-signing-secret", "s3cret-signing-value").await;
    c.fill("#webhook-rate", "25").await;
    c.click("#save-webhook").await;
    c.text_until("#providers", Duration::from_secs(10), |t| t.contains("signing_secret: set")).await;
    assert!(!c.client.source().await.unwrap().contains("s3cret-signing-value"), "a secret is never shown back");
    let stored = s.ok("GET", &format!("/v1/tenants/{a}/providers/webhook"), &admin, None).await;
    assert_eq!(
        (stored["url"].as_str(), stored["senders"][0]["rate_limit_per_s"].as_u64()),
        (Some("http://127.0.0.1:9/hook"), Some(25))
    );
    // An email provider with a bad unsubscribe target: the server's error, in words.
    c.fill("#email-host", "127.0.0.1").await;
    c.fill("#email-list-unsubscribe", "ftp://nope").await;
    c.fill("#email-sender", "news@example.com").await;
    c.click("#save-email").await;
    let alert = c.text_until("#alert", Duration::from_secs(10), |t| !t.is_empty()).await;
    assert!(alert.contains("unsubscribe") && !alert.contains('{'), "{alert}");
    c.screenshot("providers").await;

    // Another tenant's operator sees none of it.
    c.sign_in(&op_b).await;
    c.goto("/console/suppressions").await;
    c.text_until("main", Duration::from_secs(10), |t| t.contains("No suppressed address.")).await;
    c.goto("/console/providers").await;
    c.text_until("main", Duration::from_secs(10), |t| t.contains("Only tenant admins")).await;
    c.client.close().await.unwrap();
    s.stop().await;
}

impl Console {
    async fn find_all_buttons_in(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(&format!("{css} button"))).await.unwrap().len()
    }
}
