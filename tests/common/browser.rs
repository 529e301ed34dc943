//! Headless Debian chromium driven through chromedriver (the console's and the bench
//! report's browser tests). Outside CI a machine without them skips; in CI it fails.

use super::free_port;
use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The chromedriver process; killed when dropped.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free loopback port, and a headless chromium session through it.
pub async fn browser(what: &str) -> Option<(Driver, Client)> {
    let found = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found("chromedriver") || !found("chromium") {
        assert!(
            std::env::var("CI").is_err(),
            "chromium and chromedriver are required in CI (.ci/run installs them: apt-get install chromium chromium-driver)"
        );
        eprintln!("!!! SKIPPED: no chromium/chromedriver here; {what} did not run");
        return None;
    }
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900"]}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("chromedriver did not start a session: {e}"),
        }
    }
}
