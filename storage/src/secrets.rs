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

/// The AES-256-GCM key for provider secrets (and, derived from it, the key of blind indexes).
#[derive(Clone)]
pub struct SecretKey {
    cipher: Aes256Gcm,
    /// HMAC-SHA256 key for [`SecretKey::blind_index`], derived so it never equals the AES key.
    index_key: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| SecretError::BadKey)?;
        let index_key = hmac(bytes, &[b"herald blind index v1"]);
        Ok(SecretKey { cipher, index_key })
    }

    /// A keyed digest of `value` for `purpose` (e.g. the WhatsApp verify token): lets the store
    /// find a secret's owner by exact match without holding the secret in the clear, and
    /// without an offline dictionary attack on a stolen store (the key is not in the store).
    pub fn blind_index(&self, purpose: &str, value: &str) -> [u8; 32] {
        hmac(&self.index_key, &[purpose.as_bytes(), &[0], value.as_bytes()])
    }

    pub fn seal(&self, aad: &str, secrets: &BTreeMap<String, String>) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let plain = serde_json::to_vec(secrets).unwrap_or_default();
        let ciphertext =
            self.cipher.encrypt(&Nonce::from(nonce), Payload { msg: &plain, aad: aad.as_bytes() }).unwrap_or_default();
        Sealed { nonce, ciphertext }
    }

    pub fn open(&self, aad: &str, sealed: &Sealed) -> Result<BTreeMap<String, String>, SecretError> {
        if sealed.ciphertext.is_empty() {
            return Ok(BTreeMap::new());
        }
        let plain = self
            .cipher
            .decrypt(&Nonce::from(sealed.nonce), Payload { msg: &sealed.ciphertext, aad: aad.as_bytes() })
            .map_err(|_| SecretError::Open)?;
        serde_json::from_slice(&plain).map_err(|_| SecretError::Open)
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
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
        // Blind indexes match exactly, per purpose, and depend on the key.
        assert_eq!(key.blind_index("verify", "vt"), key.blind_index("verify", "vt"));
        assert_ne!(key.blind_index("verify", "vt"), key.blind_index("verify", "vu"));
        assert_ne!(key.blind_index("verify", "vt"), key.blind_index("other", "vt"));
        assert_ne!(key.blind_index("verify", "vt"), other.blind_index("verify", "vt"));
    }
}
