//! The SMS provider's status callbacks (Twilio-shaped): the request signature and the form
//! fields, turned into a receipt. The HTTP endpoint (`api`) only finds the tenant's secrets and
//! produces what this returns.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use schemas::{now_ms, MessageKey, Receipt, ReceiptStatus, TenantId};

/// Twilio's request signature: base64(HMAC-SHA1(token, url + sorted name/value pairs)).
pub fn twilio_signature(token: &str, url: &str, form: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = form.iter().collect();
    pairs.sort();
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()) else { return String::new() };
    mac.update(url.as_bytes());
    for (k, v) in pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` signs this callback under the tenant's auth token (constant time).
pub fn signature_valid(token: &str, url: &str, form: &[(String, String)], signature: &str) -> bool {
    !token.is_empty()
        && schemas::helpers::constant_time_eq(twilio_signature(token, url, form).as_bytes(), signature.as_bytes())
}

/// What a callback says.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// A status to reconcile.
    Receipt(Receipt),
    /// queued / accepted / sending: nothing to reconcile yet.
    Pending,
    /// A status without the message id it is about.
    MissingSid,
}

/// Reads a verified callback's form fields; `callback` is Herald's callback data from the URL.
pub fn parse(tenant: TenantId, form: &[(String, String)], callback: Option<&str>) -> Callback {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let status = match field("MessageStatus").or(field("SmsStatus")) {
        Some("sent") => ReceiptStatus::Sent,
        Some("delivered") => ReceiptStatus::Delivered,
        Some("read") => ReceiptStatus::Read,
        Some("failed" | "undelivered") => ReceiptStatus::Failed,
        _ => return Callback::Pending,
    };
    let Some(sid) = field("MessageSid").or(field("SmsSid")) else { return Callback::MissingSid };
    Callback::Receipt(Receipt {
        provider: "sms".into(),
        provider_message_id: sid.to_string(),
        key: callback.and_then(MessageKey::from_callback).filter(|k| k.tenant == tenant),
        status,
        at_ms: now_ms(),
        error: field("ErrorCode")
            .filter(|c| !c.is_empty())
            .map(|c| format!("{c}: {}", field("ErrorMessage").unwrap_or(""))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_the_documented_example() {
        // Twilio's documented example (security docs): token 12345, this URL and these fields.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let form: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(twilio_signature("12345", url, &form), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert!(signature_valid("12345", url, &form, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        assert!(!signature_valid("", url, &form, ""));
    }

    #[test]
    fn statuses_become_receipts_of_the_tenant_only() {
        let form = |status: &str| {
            vec![("MessageSid".to_string(), "SM1".to_string()), ("MessageStatus".to_string(), status.to_string())]
        };
        assert_eq!(parse(TenantId(1), &form("queued"), None), Callback::Pending);
        let Callback::Receipt(r) = parse(TenantId(1), &form("undelivered"), Some("not-a-key")) else { panic!() };
        assert_eq!((r.status, r.key, r.provider_message_id.as_str()), (ReceiptStatus::Failed, None, "SM1"));
        assert_eq!(parse(TenantId(1), &[("MessageStatus".into(), "sent".into())], None), Callback::MissingSid);
    }
}
