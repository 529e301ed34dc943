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
}

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
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self { algorithm: "HS256".into(), secret: None, public_key_path: None }
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
        if let Some(v) = var("HERALD_SIMULATOR_FAILURE_RATE") {
            self.simulator.failure_rate = v.parse().context("HERALD_SIMULATOR_FAILURE_RATE must be a number")?;
        }
        Ok(())
    }

    /// Pure checks, before any file or socket is opened.
    pub fn validate(&self) -> anyhow::Result<()> {
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
        Ok(())
    }

    /// The key sealing provider secrets, generated and kept in the data dir when not configured.
    pub fn secrets(&self) -> anyhow::Result<storage::secrets::SecretKey> {
        let hex_key = match &self.secrets_key {
            Some(k) => k.clone(),
            None => {
                let path = self.data_dir.join("secrets-key");
                if !path.exists() {
                    std::fs::create_dir_all(&self.data_dir)?;
                    let key: [u8; 32] = rand::random();
                    write_private(&path, hex::encode(key).as_bytes())?;
                }
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
            }
        };
        let bytes = hex::decode(hex_key.trim()).context("the secrets key is not hex")?;
        storage::secrets::SecretKey::from_bytes(&bytes).map_err(anyhow::Error::msg)
    }

    /// The token verifier (and, for HS256, minter), generating and keeping a secret in the data
    /// dir when none is configured.
    pub fn auth(&self) -> anyhow::Result<api::Auth> {
        if self.jwt.algorithm != "HS256" {
            let path = self.jwt.public_key_path.as_ref().context("jwt.public_key_path is required")?;
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            return api::Auth::public_key(&self.jwt.algorithm, &pem).map_err(anyhow::Error::msg);
        }
        if let Some(secret) = &self.jwt.secret {
            return Ok(api::Auth::hs256(secret.as_bytes()));
        }
        let path = self.data_dir.join("jwt-secret");
        if !path.exists() {
            std::fs::create_dir_all(&self.data_dir)?;
            let secret: [u8; 32] = rand::random();
            write_private(&path, hex::encode(secret).as_bytes())?;
        }
        let secret = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(api::Auth::hs256(secret.trim().as_bytes()))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
