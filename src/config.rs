//! Herald's configuration: defaults < `herald.toml` (or `--config`) < `HERALD_*` environment <
//! command-line flags. Validation is pure and runs before anything is opened.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration. Zero config runs the embedded mode on `./herald-data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeraldConfig {
    /// Address the API listens on (`HERALD_LISTEN`).
    pub listen: String,
    /// Where the embedded store, topics and secrets live (`HERALD_DATA_DIR`).
    pub data_dir: PathBuf,
    pub jwt: JwtConfig,
    pub simulator: SimulatorSettings,
    /// 64 hex characters: the AES-256-GCM key sealing provider secrets (`HERALD_SECRETS_KEY`);
    /// when unset, one is generated in the data dir (0600).
    pub secrets_key: Option<String>,
    /// The WhatsApp messaging-tier window, seconds (`HERALD_QUOTA_WINDOW_S`; Meta: 24 h).
    pub quota_window_s: u64,
    /// Timeout of each HTTP provider call, ms (`HERALD_PROVIDER_TIMEOUT_MS`).
    pub provider_timeout_ms: u64,
    /// After a call that may have reached the provider (timeout, connection lost), how long to
    /// wait for a receipt before sending again, ms (`HERALD_RECEIPT_GRACE_MS`).
    pub receipt_grace_ms: u64,
    /// Where Prometheus scrapes `/metrics` (`HERALD_METRICS_LISTEN`; `off` disables it). Never
    /// the public listener: the metrics name every tenant and sender.
    pub metrics_listen: String,
    /// Let tenant provider settings point at loopback, private, link-local or metadata
    /// addresses (`HERALD_ALLOW_PRIVATE_PROVIDER_ADDRESSES`). Only for a mock provider on the
    /// same host, or tests: a tenant could otherwise make Herald call internal services.
    pub allow_private_provider_addresses: bool,
    /// How long after a tenant's deletion its data is purged, seconds
    /// (`HERALD_TENANT_PURGE_AFTER_S`).
    pub tenant_purge_after_s: u64,
    /// How long `Idempotency-Key` responses are replayed, seconds (`HERALD_IDEMPOTENCY_TTL_S`).
    pub idempotency_ttl_s: u64,
    /// `[backend] kind = "embedded" | "distributed"`.
    pub backend: crate::backend::BackendSettings,
    /// The distributed deployment's topics (`[fluvio]`).
    pub fluvio: crate::backend::FluvioSettings,
    /// The distributed deployment's store (`[scylla]`).
    pub scylla: crate::backend::ScyllaSettings,
    /// The distributed deployment's shared state (`[redis]`).
    pub redis: crate::backend::RedisSettings,
    /// Which stages this process runs (set by `herald serve --role` and `herald worker
    /// --stages`, not by the file); `None`: all.
    #[serde(skip)]
    pub stages: Option<Vec<String>>,
}

/// A configuration Herald refuses to start with (the process exits with status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How bearer tokens are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// `HS256` (shared secret), `RS256` or `EdDSA` (public key) (`HERALD_JWT_ALGORITHM`).
    pub algorithm: String,
    /// HS256 secret (`HERALD_JWT_SECRET`); when unset, one is generated in the data dir.
    pub secret: Option<String>,
    /// PEM public key for RS256/EdDSA (`HERALD_JWT_PUBLIC_KEY_PATH`).
    pub public_key_path: Option<PathBuf>,
    /// When set, tokens must carry this `iss` (`HERALD_JWT_ISSUER`); `herald token` adds it.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud` (`HERALD_JWT_AUDIENCE`); `herald token` adds it.
    pub audience: Option<String>,
}

/// The simulated provider used for tenants without a real one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSettings {
    /// Base latency of a simulated provider call, ms.
    pub latency_ms: u64,
    /// Delay before the simulated delivery receipt, ms.
    pub receipt_delay_ms: u64,
    /// Share of calls failing transiently (0..1).
    pub failure_rate: f64,
    /// Share of calls failing permanently (0..1): failed, kept in the DLQ for redrive.
    pub permanent_failure_rate: f64,
}

impl Default for HeraldConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: "./herald-data".into(),
            jwt: JwtConfig::default(),
            simulator: SimulatorSettings::default(),
            secrets_key: None,
            quota_window_s: 24 * 3_600,
            provider_timeout_ms: 30_000,
            receipt_grace_ms: 30_000,
            metrics_listen: "127.0.0.1:9464".into(),
            allow_private_provider_addresses: false,
            tenant_purge_after_s: 3_600,
            idempotency_ttl_s: 24 * 3_600,
            backend: Default::default(),
            fluvio: Default::default(),
            scylla: Default::default(),
            redis: Default::default(),
            stages: None,
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self { algorithm: "HS256".into(), secret: None, public_key_path: None, issuer: None, audience: None }
    }
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self { latency_ms: 5, receipt_delay_ms: 500, failure_rate: 0.0, permanent_failure_rate: 0.0 }
    }
}

impl HeraldConfig {
    /// Loads defaults < file < environment. `file` defaults to `./herald.toml` when present.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None if Path::new("herald.toml").exists() => Self::from_file(Path::new("herald.toml"))?,
            None => Self::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("HERALD_BACKEND") {
            self.backend.kind = match v.as_str() {
                "embedded" => crate::backend::BackendKind::Embedded,
                "distributed" => crate::backend::BackendKind::Distributed,
                other => bail!("HERALD_BACKEND {other:?}: use embedded or distributed"),
            };
        }
        if let Some(v) = var("HERALD_FLUVIO_ENDPOINT") {
            self.fluvio.endpoint = v;
        }
        if let Some(v) = var("HERALD_SCYLLA_NODES") {
            self.scylla.nodes = v.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        }
        if let Some(v) = var("HERALD_SCYLLA_KEYSPACE") {
            self.scylla.keyspace = v;
        }
        if let Some(v) = var("HERALD_REDIS_URL") {
            self.redis.url = v;
        }
        if let Some(v) = var("HERALD_PARTITIONS") {
            self.backend.partitions = v.parse().context("HERALD_PARTITIONS must be a number of partitions")?;
        }
        if let Some(v) = var("HERALD_MEMORY_BUDGET_MIB") {
            self.backend.memory_budget_mib = v.parse().context("HERALD_MEMORY_BUDGET_MIB must be a number of MiB")?;
        }
        if let Some(v) = var("HERALD_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("HERALD_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("HERALD_JWT_ALGORITHM") {
            self.jwt.algorithm = v;
        }
        if let Some(v) = var("HERALD_JWT_SECRET") {
            self.jwt.secret = Some(v);
        }
        if let Some(v) = var("HERALD_JWT_PUBLIC_KEY_PATH") {
            self.jwt.public_key_path = Some(v.into());
        }
        if let Some(v) = var("HERALD_SECRETS_KEY") {
            self.secrets_key = Some(v);
        }
        if let Some(v) = var("HERALD_QUOTA_WINDOW_S") {
            self.quota_window_s = v.parse().context("HERALD_QUOTA_WINDOW_S must be a number of seconds")?;
        }
        if let Some(v) = var("HERALD_PROVIDER_TIMEOUT_MS") {
            self.provider_timeout_ms = v.parse().context("HERALD_PROVIDER_TIMEOUT_MS must be a number of ms")?;
        }
        if let Some(v) = var("HERALD_RECEIPT_GRACE_MS") {
            self.receipt_grace_ms = v.parse().context("HERALD_RECEIPT_GRACE_MS must be a number of ms")?;
        }
        if let Some(v) = var("HERALD_JWT_ISSUER") {
            self.jwt.issuer = Some(v);
        }
        if let Some(v) = var("HERALD_JWT_AUDIENCE") {
            self.jwt.audience = Some(v);
        }
        if let Some(v) = var("HERALD_METRICS_LISTEN") {
            self.metrics_listen = v;
        }
        if let Some(v) = var("HERALD_ALLOW_PRIVATE_PROVIDER_ADDRESSES") {
            self.allow_private_provider_addresses = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = var("HERALD_TENANT_PURGE_AFTER_S") {
            self.tenant_purge_after_s = v.parse().context("HERALD_TENANT_PURGE_AFTER_S must be a number of seconds")?;
        }
        if let Some(v) = var("HERALD_IDEMPOTENCY_TTL_S") {
            self.idempotency_ttl_s = v.parse().context("HERALD_IDEMPOTENCY_TTL_S must be a number of seconds")?;
        }
        if let Some(v) = var("HERALD_SIMULATOR_LATENCY_MS") {
            self.simulator.latency_ms = v.parse().context("HERALD_SIMULATOR_LATENCY_MS must be a number")?;
        }
        if let Some(v) = var("HERALD_SIMULATOR_RECEIPT_DELAY_MS") {
            self.simulator.receipt_delay_ms =
                v.parse().context("HERALD_SIMULATOR_RECEIPT_DELAY_MS must be a number")?;
        }
        if let Some(v) = var("HERALD_SIMULATOR_FAILURE_RATE") {
            self.simulator.failure_rate = v.parse().context("HERALD_SIMULATOR_FAILURE_RATE must be a number")?;
        }
        Ok(())
    }

    /// Pure checks, before any file or socket is opened.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.backend.kind == crate::backend::BackendKind::Distributed {
            self.distributed()?;
            if !(1..=3_600).contains(&self.backend.lease_ttl_s) {
                bail!("backend.lease_ttl_s must be 1 to 3600 seconds");
            }
            if !(1..=1_024).contains(&self.backend.partitions) {
                bail!("backend.partitions must be 1 to 1024");
            }
        } else if self.backend.partitions != pipeline::topic::DEFAULT_PARTITIONS {
            bail!("backend.partitions applies to the distributed deployment; the embedded backend keeps 8");
        }
        let min = crate::backend::MIN_MEMORY_BUDGET_MIB;
        if !(min..=1 << 20).contains(&self.backend.memory_budget_mib) {
            bail!("backend.memory_budget_mib must be {min} to 1048576 MiB");
        }
        for stage in self.stages.iter().flatten() {
            if !crate::engine::STAGE_ROLES.contains(&stage.as_str()) {
                bail!("unknown stage {stage:?}: use {}", crate::engine::STAGE_ROLES.join(", "));
            }
        }
        self.listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("listen {:?} is not host:port", self.listen))?;
        match self.jwt.algorithm.as_str() {
            "HS256" => {
                if self.jwt.secret.as_ref().is_some_and(|s| s.len() < 16) {
                    bail!("jwt.secret must be at least 16 characters");
                }
            }
            "RS256" | "EdDSA" if self.jwt.public_key_path.is_none() => {
                bail!("jwt.algorithm {} needs jwt.public_key_path", self.jwt.algorithm)
            }
            "RS256" | "EdDSA" => {}
            other => bail!("jwt.algorithm {other:?} is not supported (HS256, RS256, EdDSA)"),
        }
        for (name, rate) in [
            ("failure_rate", self.simulator.failure_rate),
            ("permanent_failure_rate", self.simulator.permanent_failure_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                bail!("simulator.{name} must be between 0 and 1");
            }
        }
        if let Some(key) = &self.secrets_key {
            if hex::decode(key).map(|k| k.len()) != Ok(32) {
                bail!("secrets_key must be 64 hex characters (32 bytes)");
            }
        }
        if self.quota_window_s == 0 {
            bail!("quota_window_s must be positive");
        }
        if self.provider_timeout_ms < 100 {
            bail!("provider_timeout_ms must be at least 100");
        }
        if self.metrics_listen != "off" {
            self.metrics_listen
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("metrics_listen {:?} is not host:port (or \"off\")", self.metrics_listen))?;
        }
        if self.idempotency_ttl_s == 0 {
            bail!("idempotency_ttl_s must be positive");
        }
        Ok(())
    }

    /// The metrics listener address, unless disabled.
    /// The distributed backends' settings, resolved (an error names what is wrong).
    pub fn distributed(&self) -> anyhow::Result<crate::backend::DistributedConfig> {
        let mut config = crate::backend::DistributedConfig::from_settings(&self.fluvio, &self.scylla, &self.redis)?;
        config.redis.idempotency_ttl = std::time::Duration::from_secs(self.idempotency_ttl_s);
        config.partitions = self.backend.partitions;
        Ok(config)
    }

    pub fn metrics_addr(&self) -> Option<&str> {
        (self.metrics_listen != "off").then_some(self.metrics_listen.as_str())
    }

    /// The key sealing provider secrets, generated and kept in the data dir when not configured.
    pub fn secrets(&self) -> anyhow::Result<storage::secrets::SecretKey> {
        let hex_key = match &self.secrets_key {
            Some(k) => k.clone(),
            None => secret_file(&self.data_dir.join("secrets-key"), 64)?,
        };
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| ConfigError("the secrets key is not hex (64 hex characters expected)".into()))?;
        storage::secrets::SecretKey::from_bytes(&bytes).map_err(|e| ConfigError(e.to_string()).into())
    }

    /// The token verifier (and, for HS256, minter), generating and keeping a secret in the data
    /// dir when none is configured.
    pub fn auth(&self) -> anyhow::Result<api::Auth> {
        if self.jwt.algorithm != "HS256" {
            let path = self.jwt.public_key_path.as_ref().context("jwt.public_key_path is required")?;
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            return api::Auth::public_key(&self.jwt.algorithm, &pem).map_err(anyhow::Error::msg);
        }
        let (issuer, audience) = (self.jwt.issuer.clone(), self.jwt.audience.clone());
        if let Some(secret) = &self.jwt.secret {
            return Ok(api::Auth::hs256(secret.as_bytes()).with_issuer_audience(issuer, audience));
        }
        let secret = secret_file(&self.data_dir.join("jwt-secret"), 32)?;
        Ok(api::Auth::hs256(secret.as_bytes()).with_issuer_audience(issuer, audience))
    }
}

/// A secret kept in the data dir: generated on first use (32 random bytes, hex), then read.
/// An existing file shorter than `min_chars` (empty after a crash mid-write on an older
/// version, truncated, edited by hand) is refused: an empty HMAC key would verify tokens
/// anyone can mint.
fn secret_file(path: &Path, min_chars: usize) -> anyhow::Result<String> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let secret: [u8; 32] = rand::random();
        write_private_atomically(path, hex::encode(secret).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let secret = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let secret = secret.trim().to_string();
    if secret.len() < min_chars {
        return Err(ConfigError(format!(
            "{} holds {} characters; a secret needs at least {min_chars}. Remove the file to generate a new one \
             (tokens signed with the old secret stop working) or restore it from a backup",
            path.display(),
            secret.len()
        ))
        .into());
    }
    Ok(secret)
}

/// Writes a 0600 file so that it either exists complete or not at all: a temp file is written
/// and fsynced, then linked into place (failing if another process won the race; its file is
/// then used), and the directory is fsynced.
fn write_private_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("secret"),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_written_whole_and_short_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-secret");
        let first = secret_file(&path, 32).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(secret_file(&path, 32).unwrap(), first, "read back, not regenerated");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
        std::fs::write(&path, "").unwrap();
        let err = secret_file(&path, 32).unwrap_err();
        assert!(err.downcast_ref::<ConfigError>().is_some(), "{err}");
        std::fs::write(&path, "short\n").unwrap();
        assert!(secret_file(&path, 32).is_err());
    }

    #[test]
    fn layering_and_validation() {
        let mut c: HeraldConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\n[jwt]\nsecret = \"0123456789abcdef\"").unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        c.apply_env(|k| (k == "HERALD_LISTEN").then(|| "127.0.0.1:9001".to_string())).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9001");
        c.validate().unwrap();
        assert!(toml::from_str::<HeraldConfig>("listne = \"x\"").is_err(), "unknown keys are refused");
        c.jwt.algorithm = "none".into();
        assert!(c.validate().is_err());
        c.jwt.algorithm = "RS256".into();
        assert!(c.validate().is_err(), "RS256 without a key");
    }

    #[test]
    fn the_distributed_backend_is_configured_by_file_and_environment() {
        let mut c: HeraldConfig = toml::from_str(
            "[backend]\nkind = \"distributed\"\n[scylla]\nnodes = [\"10.0.0.1:9042\"]\nconsistency = \"quorum\"",
        )
        .unwrap();
        assert_eq!(c.backend.kind, crate::backend::BackendKind::Distributed);
        let env = |k: &str| match k {
            "HERALD_SCYLLA_NODES" => Some("a:9042, b:9042".to_string()),
            "HERALD_REDIS_URL" => Some("redis://r:6379/1".to_string()),
            "HERALD_FLUVIO_ENDPOINT" => Some("f:9003".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        c.validate().unwrap();
        let d = c.distributed().unwrap();
        assert_eq!(d.scylla.nodes, vec!["a:9042", "b:9042"]);
        assert_eq!((d.redis.url.as_str(), d.fluvio.endpoint.as_str()), ("redis://r:6379/1", "f:9003"));
        assert_eq!(d.scylla.consistency, scylla::statement::Consistency::Quorum);
        c.scylla.consistency = "most".into();
        assert!(c.validate().is_err(), "an unknown consistency is refused");
        assert!(toml::from_str::<HeraldConfig>("[backend]\nkind = \"cloud\"").is_err());
        assert!(c.apply_env(|k| (k == "HERALD_BACKEND").then(|| "cloud".to_string())).is_err());
        c.scylla.consistency = "local_quorum".into();
        c.stages = Some(vec!["deliver".into(), "mail".into()]);
        assert!(c.validate().unwrap_err().to_string().contains("mail"), "an unknown stage is refused");
        c.stages = Some(vec!["deliver".into()]);
        c.backend.lease_ttl_s = 0;
        assert!(c.validate().is_err(), "a zero lease TTL is refused");
        c.backend.lease_ttl_s = 10;
        c.apply_env(|k| (k == "HERALD_PARTITIONS").then(|| "32".to_string())).unwrap();
        c.validate().unwrap();
        assert_eq!(c.distributed().unwrap().partitions, 32);
        c.backend.partitions = 0;
        assert!(c.validate().is_err(), "zero partitions are refused");
        c.backend.kind = crate::backend::BackendKind::Embedded;
        c.backend.partitions = 16;
        assert!(c.validate().is_err(), "the embedded backend keeps its 8 partitions");
        c.backend.partitions = pipeline::topic::DEFAULT_PARTITIONS;
        c.apply_env(|k| (k == "HERALD_MEMORY_BUDGET_MIB").then(|| "8".to_string())).unwrap();
        assert!(c.validate().is_err(), "a memory budget under 16 MiB is refused");
        c.apply_env(|k| (k == "HERALD_MEMORY_BUDGET_MIB").then(|| "512".to_string())).unwrap();
        assert_eq!(c.backend.memory_budget_mib, 512);
        assert!(c.validate().is_ok());
    }
}
