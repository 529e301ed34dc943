//! A cloneable shutdown signal: triggered once (SIGTERM, Ctrl-C, end of a run), observed by
//! every consumer loop between batches so in-flight work finishes and commits before exit.

use std::time::Duration;
use tokio::sync::watch;

/// How long in-flight batches may take to finish after shutdown is triggered.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self { tx: std::sync::Arc::new(tx), rx }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once triggered.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Resolves `grace` after the trigger: how long in-flight work may take to finish before it
    /// is abandoned (uncommitted, so it is redone after restart). Without this bound a drain
    /// could wait forever on a consumer that already stopped (a full topic, a throttle budget).
    pub async fn expired(&self) {
        self.wait().await;
        tokio::time::sleep(DRAIN_GRACE).await;
    }
}
