//! Records that flow on Herald's topics, in flow order.
//!
//! ```text
//! campaign.sends      SendRequest
//! campaign.chunks     Chunk                (≈1,000 recipients)
//! messages.rendered   MessageBatch
//! messages.ready      MessageBatch         (released by throttle)
//! delivery.retry      RetryBatch           (not before a time)
//! delivery.outcomes   OutcomeBatch         (also carries Sealed from chunk)
//! delivery.dlq        DeadLetterBatch
//! receipts.inbound    ReceiptBatch
//! ```

use crate::ids::*;
use serde::{Deserialize, Serialize};

/// A request to chunk a campaign from chunk `from_seq` on (the lifecycle sends 0; chunk sends
/// itself the continuation after each step, so a 10M-recipient campaign is many small steps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    /// When the send was triggered (ms since the Unix epoch); latency is measured from here.
    pub requested_at_ms: u64,
    /// The chunk this request starts at; a request behind the checkpoint is a stale duplicate.
    pub from_seq: u64,
}

/// One recipient as read from the audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub id: RecipientId,
    pub bucket: u32,
    pub address: String,
    /// Template variables, in the audience's column order.
    pub attrs: Vec<(String, String)>,
}

/// A slice of a campaign's audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    /// Position of this chunk in the campaign (0, 1, 2, ...).
    pub seq: u64,
    pub trigger_ms: u64,
    pub recipients: Vec<Recipient>,
}

/// Rendered content per channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    Sms {
        text: String,
    },
    Email {
        subject: String,
        text: String,
        html: Option<String>,
    },
    /// A WhatsApp template message: the approved template's name and language, and the rendered
    /// parameters per component (`components[i] = (type, parameters)`).
    WhatsApp {
        template_name: String,
        language: String,
        components: Vec<(String, Vec<String>)>,
    },
}

impl Content {
    pub fn channel(&self) -> Channel {
        match self {
            Content::Sms { .. } => Channel::Sms,
            Content::Email { .. } => Channel::Email,
            Content::WhatsApp { .. } => Channel::WhatsApp,
        }
    }
}

/// One message ready to be throttled and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedMessage {
    pub key: MessageKey,
    pub recipient: RecipientId,
    pub address: String,
    pub content: Content,
    pub trigger_ms: u64,
    /// Delivery attempts made so far (0 until the first provider call).
    pub attempt: u32,
}

/// A batch of messages of one campaign (`messages.rendered`, `messages.ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBatch {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub messages: Vec<RenderedMessage>,
}

/// Messages for another delivery attempt (`delivery.retry`, due when the record's due header
/// says): retries, and DLQ redrives (`redrive`: the dead-lettered attempt may be sent again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBatch {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub redrive: bool,
    pub messages: Vec<RenderedMessage>,
}

/// The result of delivering (or deciding not to deliver) one message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutcomeKind {
    /// The provider accepted the message (not yet delivered).
    Accepted { provider: String, provider_message_id: String },
    /// Permanently failed with a reason (invalid template variables, undeliverable, ...).
    Failed { code: String, reason: String },
    /// Skipped: the address is suppressed/opted out.
    Suppressed,
    /// Not sent because the campaign was cancelled.
    Cancelled,
    /// Gave up after retries or on a permanent provider error; a DLQ entry holds the message.
    DeadLettered { reason: String },
}

/// An outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub key: MessageKey,
    pub recipient: RecipientId,
    pub address: String,
    pub kind: OutcomeKind,
    pub attempts: u32,
    pub at_ms: u64,
    pub trigger_ms: u64,
}

/// Events reconcile applies, in batches (`delivery.outcomes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeEvent {
    Message(Outcome),
    /// The chunk stage finished reading the audience: the campaign has exactly `total` messages.
    Sealed {
        tenant: TenantId,
        campaign: CampaignId,
        total: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeBatch {
    pub tenant: TenantId,
    pub events: Vec<OutcomeEvent>,
}

/// Provider-reported status of a message, in the order the state machine respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReceiptStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

/// A provider receipt (status webhook / simulator callback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Provider name (`whatsapp`, `sms`, `simulator`, ...), scoping `provider_message_id`.
    pub provider: String,
    pub provider_message_id: String,
    /// Present when the provider echoed our callback data; otherwise resolved through the
    /// batch tenant's provider-id index.
    pub key: Option<MessageKey>,
    pub status: ReceiptStatus,
    pub at_ms: u64,
    pub error: Option<String>,
}

/// Receipts of one tenant: the tenant whose provider signed them (webhooks verify the
/// signature before producing), or whose message the simulator / deliver reports on. Reconcile
/// applies a receipt only to that tenant's messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBatch {
    pub tenant: TenantId,
    pub receipts: Vec<Receipt>,
}

impl ReceiptBatch {
    /// One tenant's receipts as one batch per campaign (keyed receipts, in arrival order),
    /// then one batch of those without callback data: what `receipts.inbound` keys by.
    pub fn by_campaign(tenant: TenantId, receipts: Vec<Receipt>) -> Vec<ReceiptBatch> {
        let mut groups: Vec<(Option<CampaignId>, Vec<Receipt>)> = Vec::new();
        for r in receipts {
            let campaign = r.key.map(|k| k.campaign);
            match groups.iter_mut().find(|(c, _)| *c == campaign) {
                Some((_, group)) => group.push(r),
                None => groups.push((campaign, vec![r])),
            }
        }
        groups.sort_by_key(|(c, _)| c.is_none());
        groups.into_iter().map(|(_, receipts)| ReceiptBatch { tenant, receipts }).collect()
    }
}

/// A message that will not be retried any more, with why (`delivery.dlq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message: RenderedMessage,
    /// `"<code>: <message>"` (see [`DeadLetter::reason_of`]), or for a message Herald gave up
    /// on, `"gave up after N attempts; last error <code>: <message>"`.
    pub reason: String,
    pub attempts: u32,
    pub at_ms: u64,
    /// Not to be redriven before this time (e.g. WhatsApp 131049: the per-user marketing cap).
    pub not_before_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterBatch {
    pub tenant: TenantId,
    pub letters: Vec<DeadLetter>,
}

impl DeadLetter {
    /// The reason a letter records for a provider's (or Herald's) `code` and `message`.
    pub fn reason_of(code: &str, message: &str) -> String {
        format!("{code}: {message}")
    }

    /// The machine-readable code of a reason written by [`DeadLetter::reason_of`]: the provider's
    /// error code (`131049`, `21610`) or Herald's own (`sender_stopped`); `""` when there is none.
    pub fn code_of(reason: &str) -> &str {
        let last = reason.rsplit_once("; last error ").map_or(reason, |(_, rest)| rest);
        match last.split_once(": ") {
            Some((code, _)) if !code.is_empty() && !code.contains(char::is_whitespace) => code,
            _ => "",
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The `(tenant, campaign)` an encoded [`SendRequest`], [`Chunk`], [`MessageBatch`] or
/// [`RetryBatch`] belongs to, read from its first two fields without decoding the rest (the
/// runner's read-ahead scans many records for their lanes). `None` if the bytes do not start
/// like one.
pub fn campaign_of_encoded(bytes: &[u8]) -> Option<(TenantId, CampaignId)> {
    crate::codec::decode::<(TenantId, CampaignId)>(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_campaign_of_an_encoded_record_is_read_from_its_first_fields() {
        let (t, c) = (TenantId(300), CampaignId(u64::MAX - 1));
        use crate::codec::encode;
        let records = [
            encode(&SendRequest { tenant: t, campaign: c, requested_at_ms: 5, from_seq: 7 }).unwrap(),
            encode(&Chunk { tenant: t, campaign: c, seq: 3, trigger_ms: 9, recipients: Vec::new() }).unwrap(),
            encode(&MessageBatch { tenant: t, campaign: c, messages: Vec::new() }).unwrap(),
            encode(&RetryBatch { tenant: t, campaign: c, redrive: true, messages: Vec::new() }).unwrap(),
        ];
        for bytes in &records {
            assert_eq!(campaign_of_encoded(bytes), Some((t, c)));
        }
        assert_eq!(campaign_of_encoded(&[]), None);
        assert_eq!(campaign_of_encoded(&[9, 1]), None, "another format version");
    }

    #[test]
    fn a_dead_letter_reason_yields_its_code() {
        let reason = DeadLetter::reason_of("131049", "ecosystem engagement");
        assert_eq!(DeadLetter::code_of(&reason), "131049");
        let gave_up = format!("gave up after 5 attempts; last error {}", DeadLetter::reason_of("130429", "rate: hit"));
        assert_eq!(DeadLetter::code_of(&gave_up), "130429");
        assert_eq!(DeadLetter::code_of("sender_stopped: every sender stopped"), "sender_stopped");
        assert_eq!(DeadLetter::code_of("no code here"), "");
        assert_eq!(DeadLetter::code_of("two words: x"), "");
    }
}
