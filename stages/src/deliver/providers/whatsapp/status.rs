//! WhatsApp Cloud API status webhooks: the envelope Meta posts, its signature
//! (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with the app secret), and what each
//! change means — statuses become receipts, an inbound "STOP" is an opt-out. The HTTP endpoint
//! (`api`) finds the tenant that owns each phone number id, checks the signature with its
//! secret, and produces what this returns.

use schemas::{now_ms, MessageKey, Receipt, ReceiptStatus, TenantId};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    entry: Vec<Entry>,
}
#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}
#[derive(Debug, Deserialize)]
struct Change {
    value: Option<ChangeValue>,
}
/// One change: the statuses and inbound messages of one phone number id.
#[derive(Debug, Deserialize)]
pub struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<Status>,
    #[serde(default)]
    messages: Vec<Inbound>,
}
#[derive(Debug, Deserialize)]
struct Metadata {
    phone_number_id: String,
}
#[derive(Debug, Deserialize)]
struct Status {
    id: String,
    status: String,
    timestamp: Option<String>,
    biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    errors: Vec<StatusError>,
}
#[derive(Debug, Deserialize)]
struct StatusError {
    code: Option<i64>,
    title: Option<String>,
}
#[derive(Debug, Deserialize)]
struct Inbound {
    from: String,
    text: Option<InboundText>,
}
#[derive(Debug, Deserialize)]
struct InboundText {
    body: String,
}

/// Parses a webhook body (only to find whose secret signs it: nothing is acted on before the
/// signature is checked).
pub fn parse(body: &[u8]) -> Result<Envelope, serde_json::Error> {
    serde_json::from_slice(body)
}

/// Whether `signature` (`sha256=<hex>`) signs `body` under the app secret (constant time).
pub fn signature_valid(app_secret: &str, body: &[u8], signature: &str) -> bool {
    schemas::helpers::verify_sha256_hex(app_secret.as_bytes(), body, signature)
}

impl Envelope {
    /// Every change, in order.
    pub fn changes(&self) -> Vec<&ChangeValue> {
        self.entry.iter().flat_map(|e| &e.changes).filter_map(|c| c.value.as_ref()).collect()
    }
}

impl ChangeValue {
    /// The phone number id the change is about.
    pub fn phone_number_id(&self) -> Option<&str> {
        self.metadata.as_ref().map(|m| m.phone_number_id.as_str())
    }

    /// Its statuses as receipts of `tenant` (callback data naming another tenant's message is
    /// dropped from the receipt: it then resolves through the tenant's own provider ids only).
    pub fn receipts(&self, tenant: TenantId) -> Vec<Receipt> {
        let mut out = Vec::with_capacity(self.statuses.len());
        for s in &self.statuses {
            let status = match s.status.as_str() {
                "sent" => ReceiptStatus::Sent,
                "delivered" => ReceiptStatus::Delivered,
                "read" => ReceiptStatus::Read,
                "failed" => ReceiptStatus::Failed,
                _ => continue, // e.g. "deleted", "warning": nothing to reconcile
            };
            let key = s
                .biz_opaque_callback_data
                .as_deref()
                .and_then(MessageKey::from_callback)
                .filter(|k| k.tenant == tenant);
            let at_ms = s
                .timestamp
                .as_deref()
                .and_then(|t| t.parse::<u64>().ok())
                .and_then(|t| t.checked_mul(1000))
                .unwrap_or_else(now_ms);
            let error =
                s.errors.first().map(|e| format!("{}: {}", e.code.unwrap_or(0), e.title.clone().unwrap_or_default()));
            out.push(Receipt {
                provider: "whatsapp".into(),
                provider_message_id: s.id.clone(),
                key,
                status,
                at_ms,
                error,
            });
        }
        out
    }

    /// Senders (as sent, digits with or without `+`) whose inbound message was "STOP".
    pub fn opt_outs(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| m.text.as_ref().is_some_and(|t| t.body.trim().eq_ignore_ascii_case("stop")))
            .map(|m| m.from.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_opt_outs_are_read_from_the_envelope() {
        let key = MessageKey {
            tenant: TenantId(3),
            campaign: schemas::CampaignId(1),
            bucket: 0,
            id: schemas::MessageId::from_bytes([1; 16]),
        };
        let body = serde_json::json!({"entry": [{"changes": [{"value": {
            "metadata": {"phone_number_id": "PN"},
            "statuses": [
                {"id": "wamid.1", "status": "delivered", "timestamp": "1700000000", "biz_opaque_callback_data": key.to_callback()},
                {"id": "wamid.2", "status": "failed", "errors": [{"code": 131026, "title": "undeliverable"}]},
                {"id": "wamid.3", "status": "deleted"}
            ],
            "messages": [{"from": "15550001", "text": {"body": " Stop "}}, {"from": "15550002", "text": {"body": "hi"}}]
        }}]}]})
        .to_string();
        let envelope = parse(body.as_bytes()).unwrap();
        let changes = envelope.changes();
        assert_eq!(changes[0].phone_number_id(), Some("PN"));
        let receipts = changes[0].receipts(TenantId(3));
        assert_eq!(receipts.len(), 2);
        assert_eq!((receipts[0].key, receipts[0].at_ms), (Some(key), 1_700_000_000_000));
        assert_eq!(receipts[1].error.as_deref(), Some("131026: undeliverable"));
        assert_eq!(changes[0].receipts(TenantId(4))[0].key, None, "another tenant's callback data is dropped");
        assert_eq!(changes[0].opt_outs(), vec!["15550001"]);
    }

    #[test]
    fn signatures_are_checked() {
        let good = schemas::helpers::sign_sha256_hex(b"s3cret", b"{}");
        assert!(signature_valid("s3cret", b"{}", &good));
        assert!(!signature_valid("other", b"{}", &good));
        assert!(!signature_valid("s3cret", b"{ }", &good));
        assert!(!signature_valid("s3cret", b"{}", "sha256=zz"));
        assert!(!signature_valid("", b"{}", &good));
    }
}
