//! [`RedisState`]: the distributed deployment's [`crate::SharedState`], on one Redis primary
//! (optionally with replicas and Sentinel; Redis Cluster is not supported: a claim batch and
//! its fencing lease are checked in one script, which Cluster allows only within one slot).
//!
//! Every compare-and-set is one Lua script, so it is atomic on the server whatever the
//! interleaving of workers: claim batches (fenced by the partition lease), token buckets (on
//! Redis's own clock: one clock for every worker) and a generic value compare-and-set that the
//! lease, idempotency and quota rules (the same Rust functions the embedded state uses) write
//! through, re-reading on a lost race.
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always` an acknowledged
//! claim survives a Redis crash; with `everysec` up to a second of claims can be lost, and a
//! message whose claim was lost may be sent again (README, "Redis").
//!
//! Keys, all under the configured prefix (`herald` by default):
//!
//! | key | type | what |
//! |---|---|---|
//! | `{p}:id:{kind}` | string | `INCR` id sequence |
//! | `{p}:lease-seq` | string | `INCR` lease token sequence |
//! | `{p}:lease:{name}` | string | `token:expires_ms:holder` |
//! | `{p}:bucket:{name}` | hash | `tokens`, `ts` (a sender's token bucket) |
//! | `{p}:t:{tenant}:claims:{campaign}:{bucket}` | hash | message id → claim |
//! | `{p}:t:{tenant}:idem:{scope}:{key}` | string | idempotency entry |
//! | `{p}:t:{tenant}:quota` | string | quota ledger |
//! | `{p}:t:{tenant}:wait:{campaign}` | string | quota wait until |
//! | `{p}:t:{tenant}:status:{campaign}` | string | published campaign status |
//! | `{p}:t:{tenant}:stopped` | set | `provider NUL sender` |
//!
//! Everything a tenant owns is under `{p}:t:{tenant}:`, so a purge is one `SCAN` pattern.
//! Claims expire `claim_ttl` after their last write (they must outlive any replay of their
//! message: keep it above the topics' retention).
//!
//! It is not: a cache of the store, or a place for message data.

mod scripts;
mod state;

use crate::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

pub use state::RedisState;

/// How to reach Redis and how long what it keeps lives.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` is not built in: run Redis on a private network).
    pub url: String,
    /// Prefix of every key, so deployments (or tests) can share one Redis.
    pub prefix: String,
    /// How long a send claim lives after its last write.
    pub claim_ttl: Duration,
    /// How long a stored idempotent response lives (the API's `idempotency_ttl`).
    pub idempotency_ttl: Duration,
    /// A command that takes longer fails (transient) instead of hanging a stage.
    pub response_timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "herald".into(),
            claim_ttl: Duration::from_secs(7 * 24 * 3_600),
            idempotency_ttl: Duration::from_secs(24 * 3_600),
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects (lazily: the first command connects, and a lost connection is re-made in the
/// background with backoff while commands fail as [`Error::Unavailable`]).
fn connect(config: &RedisConfig) -> Result<ConnectionManager> {
    let client = redis::Client::open(config.url.as_str()).map_err(|e| Error::Invalid {
        code: "invalid_redis_url",
        message: format!("redis url {:?}: {e}", config.url),
    })?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    client.get_connection_manager_lazy(manager).map_err(unavailable)
}

/// Any Redis failure: the server, the network or a script error. All are reported as
/// unavailable (retry); a script error is a bug of ours and shows in the message.
fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable { backend: "redis", message: e.to_string() }
}

/// Key names (see the module docs).
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn id(&self, kind: &str) -> String {
        format!("{}:id:{kind}", self.prefix)
    }
    fn lease_seq(&self) -> String {
        format!("{}:lease-seq", self.prefix)
    }
    fn lease(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.prefix)
    }
    fn bucket(&self, name: &str) -> String {
        format!("{}:bucket:{name}", self.prefix)
    }
    fn tenant(&self, tenant: u64) -> String {
        format!("{}:t:{tenant}:", self.prefix)
    }
    fn claims(&self, tenant: u64, campaign: u64, bucket: u32) -> String {
        format!("{}claims:{campaign}:{bucket}", self.tenant(tenant))
    }
    fn idempotency(&self, tenant: u64, scope: &str, key: &str) -> String {
        format!("{}idem:{scope}:{key}", self.tenant(tenant))
    }
    fn idempotency_pattern(&self) -> String {
        format!("{}:t:*:idem:*", self.prefix)
    }
    fn quota(&self, tenant: u64) -> String {
        format!("{}quota", self.tenant(tenant))
    }
    fn wait(&self, tenant: u64, campaign: u64) -> String {
        format!("{}wait:{campaign}", self.tenant(tenant))
    }
    fn status(&self, tenant: u64, campaign: u64) -> String {
        format!("{}status:{campaign}", self.tenant(tenant))
    }
    fn stopped(&self, tenant: u64) -> String {
        format!("{}stopped", self.tenant(tenant))
    }
}

#[cfg(test)]
mod tests;
