//! HMAC signatures: `sha256=<hex>` as WhatsApp (`X-Hub-Signature-256`) and Herald's webhook
//! provider (`X-Herald-Signature`) write them, checked in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// `sha256=<hex HMAC-SHA256(body) under secret>`.
pub fn sign_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(71);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `signature` is `sha256=<hex>` of `body` under `secret` (constant time).
pub fn verify_sha256_hex(secret: &[u8], body: &[u8], signature: &str) -> bool {
    !secret.is_empty() && constant_time_eq(sign_sha256_hex(secret, body).as_bytes(), signature.as_bytes())
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let good = sign_sha256_hex(b"s3cret", b"{}");
        assert!(good.starts_with("sha256=") && good.len() == 71);
        assert!(verify_sha256_hex(b"s3cret", b"{}", &good));
        assert!(!verify_sha256_hex(b"other", b"{}", &good));
        assert!(!verify_sha256_hex(b"s3cret", b"{ }", &good));
        assert!(!verify_sha256_hex(b"s3cret", b"{}", "sha256=zz"));
        assert!(!verify_sha256_hex(b"", b"{}", &sign_sha256_hex(b"", b"{}")), "an empty secret never verifies");
    }
}
