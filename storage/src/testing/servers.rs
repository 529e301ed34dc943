//! Real servers for tests: [`RedisServer`] starts a `redis-server` on 127.0.0.1 and a free
//! port in a temporary directory, and stops it when dropped.
//!
//! When the server binary is missing, [`RedisServer::start`] prints a loud line and answers
//! `None` so the test can skip, except under `CI=true`, where it panics: CI installs Redis, and
//! a test that silently skipped there would check nothing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` (see the module docs).
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Whether tests run in CI, where a missing service is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn find(binary: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"])
        .map(|dir| Path::new(dir).join(binary))
        .find(|p| p.is_file())
}

impl RedisServer {
    /// Starts a server with `appendonly yes` and `appendfsync always` (as the README asks of
    /// production), or skips (see the module docs). `what` names the guarantee the caller
    /// checks, for the skip line.
    pub fn start(what: &str) -> Option<RedisServer> {
        let Some(binary) = find("redis-server") else {
            assert!(!in_ci(), "redis-server is not installed, and CI must check: {what}");
            eprintln!("\n!!!!! SKIPPED: redis-server not found; NOT CHECKED: {what} !!!!!\n");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            if wait_ready(&mut child, port) {
                return Some(RedisServer { child, port, _dir: dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start on a free port in 5 tries");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `child` listens on `port` (false: it exited or never listened).
fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
