//! Provider secrets sealed at rest with AES-256-GCM.
//!
//! A [`SecretKey`] (32 bytes, from configuration) seals a name → value map into [`Sealed`]
//! (random 96-bit nonce + ciphertext with tag). The tenant and provider name are bound in as
//! associated data, so a sealed blob copied to another tenant or provider does not open.
//! It is not: key management (rotation means re-`PUT`ting the provider settings).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sealed secrets: nonce and AES-GCM ciphertext (tag included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secrets key must be 32 bytes (64 hex characters)")]
    BadKey,
    #[error("sealed secrets do not open with this key (wrong key or tampered data)")]
    Open,
}

/// The AES-256-GCM key for provider secrets.
#[derive(Clone)]
pub struct SecretKey(Aes256Gcm);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        Aes256Gcm::new_from_slice(bytes).map(SecretKey).map_err(|_| SecretError::BadKey)
    }

    pub fn seal(&self, aad: &str, secrets: &BTreeMap<String, String>) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let plain = serde_json::to_vec(secrets).unwrap_or_default();
        let ciphertext =
            self.0.encrypt(&Nonce::from(nonce), Payload { msg: &plain, aad: aad.as_bytes() }).unwrap_or_default();
        Sealed { nonce, ciphertext }
    }

    pub fn open(&self, aad: &str, sealed: &Sealed) -> Result<BTreeMap<String, String>, SecretError> {
        if sealed.ciphertext.is_empty() {
            return Ok(BTreeMap::new());
        }
        let plain = self
            .0
            .decrypt(&Nonce::from(sealed.nonce), Payload { msg: &sealed.ciphertext, aad: aad.as_bytes() })
            .map_err(|_| SecretError::Open)?;
        serde_json::from_slice(&plain).map_err(|_| SecretError::Open)
    }
}

/// The associated data binding sealed secrets to their tenant and provider.
pub fn aad(tenant: schemas::TenantId, provider: &str) -> String {
    format!("herald/{tenant}/{provider}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_key_and_binding() {
        let key = SecretKey::from_bytes(&[7u8; 32]).unwrap();
        let secrets = BTreeMap::from([("access_token".to_string(), "EAAG-secret".to_string())]);
        let sealed = key.seal("herald/1/whatsapp", &secrets);
        assert!(!String::from_utf8_lossy(&sealed.ciphertext).contains("EAAG"));
        assert_eq!(key.open("herald/1/whatsapp", &sealed).unwrap(), secrets);
        assert_eq!(key.open("herald/2/whatsapp", &sealed), Err(SecretError::Open));
        let other = SecretKey::from_bytes(&[8u8; 32]).unwrap();
        assert_eq!(other.open("herald/1/whatsapp", &sealed), Err(SecretError::Open));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(key.open("herald/1/whatsapp", &tampered), Err(SecretError::Open));
        assert_eq!(SecretKey::from_bytes(&[0u8; 16]).unwrap_err(), SecretError::BadKey);
    }
}
