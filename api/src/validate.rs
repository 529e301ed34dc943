//! Input validation shared by handlers: names, addresses (E.164 phone numbers with
//! libphonenumber metadata, email addresses), recipient attributes, PATCH nulls.

use serde::Deserialize as _;

/// The largest recipient attribute value (a CSV cell, a JSON field).
pub const MAX_ATTRIBUTE_BYTES: usize = 4 * 1024;

/// Checks one recipient attribute.
pub fn attribute(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_ATTRIBUTE_BYTES {
        return Err(format!("{name:?} is {} bytes; attributes are at most {MAX_ATTRIBUTE_BYTES}", value.len()));
    }
    Ok(())
}

/// For `Option<Option<T>>` PATCH fields with `#[serde(default, deserialize_with = "present")]`:
/// absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))` (serde alone reads `null`
/// as absent, which would ignore an explicit `null` silently).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Some(Option::deserialize(deserializer)?))
}

/// A display name: 1-200 characters, not blank.
pub fn name(name: &str) -> crate::ApiResult<()> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(crate::ApiError::unprocessable("invalid_name", "name must be 1-200 characters"));
    }
    Ok(())
}

/// Normalises and validates an address; returns the canonical form or why it is invalid.
pub fn address(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("address is empty".into());
    }
    if raw.contains('@') {
        return email(raw);
    }
    if !raw.starts_with('+') {
        return Err(format!("{raw:?} is neither an email nor an E.164 phone number (+<country><number>)"));
    }
    let number = phonenumber::parse(None, raw).map_err(|e| format!("{raw:?} is not a phone number: {e}"))?;
    if !phonenumber::is_valid(&number) {
        return Err(format!("{raw:?} is not a valid phone number"));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

fn email(raw: &str) -> Result<String, String> {
    let invalid = || format!("{raw:?} is not a valid email address");
    let (local, domain) = raw.rsplit_once('@').ok_or_else(invalid)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let domain_ok = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails() {
        assert_eq!(address("+1 202-555-0143").unwrap(), "+12025550143");
        assert_eq!(address(" alex@Example.COM ").unwrap(), "alex@example.com");
        for bad in ["", "12025550143", "+1", "+999999", "a@b", "@x.io", "a..b@x.io", "a@-x.io", "a b@x.io"] {
            assert!(address(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
