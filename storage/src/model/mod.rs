//! Stored types. Serialized with `schemas::codec` (versioned bincode).

use schemas::*;
use serde::{Deserialize, Serialize};

/// A tenant and its sending policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// Messages per second this tenant may send in total (None: unlimited, only sender limits
    /// apply). A platform limit: only platform admins change it.
    pub rate_limit_per_s: Option<u32>,
    /// Burst above the rate, in messages (pacing allows `rate + burst` in any 1 s window).
    pub burst: u32,
    /// Share weight when tenants compete for shared capacity.
    pub weight: u32,
    pub created_ms: u64,
    pub state: TenantState,
}

/// Where a tenant is in its life. A deleted tenant is gone for every caller at once (tokens
/// refused, senders released, campaigns cancelled); its data is purged later, and the row stays
/// as a tombstone so its id is never reused and late pipeline events for it are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantState {
    Active,
    /// Deleted at this time; data not yet purged (its cancelled campaigns still settle).
    Deleted {
        at_ms: u64,
    },
    /// Deleted, and every row it owned removed.
    Purged {
        deleted_ms: u64,
        at_ms: u64,
    },
}

/// The platform's bounds on a tenant's limits (`Tenant::check_limits`).
pub const MAX_TENANT_WEIGHT: u32 = 1_000;
/// The largest burst any tenant may have.
pub const MAX_TENANT_BURST: u32 = 100_000;
/// A tenant's burst may be at most this many times its rate.
pub const MAX_BURST_PER_RATE: u32 = 10;

/// A tenant limit outside what the platform allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    /// Stable machine-readable code (`invalid_rate_limit`, `invalid_burst`, `invalid_weight`).
    pub code: &'static str,
    pub message: String,
}

impl Tenant {
    pub fn is_active(&self) -> bool {
        self.state == TenantState::Active
    }

    /// The platform's rules on limits, kept by every store on every write: `rate_limit_per_s`
    /// unlimited (None) or ≥ 1, `burst` ≤ 10 × rate and ≤ 100,000, `weight` 1..=1000.
    pub fn check_limits(&self) -> std::result::Result<(), LimitError> {
        let err = |code, message: String| Err(LimitError { code, message });
        if self.rate_limit_per_s == Some(0) {
            return err("invalid_rate_limit", "rate_limit_per_s must be at least 1 (null: unlimited)".into());
        }
        let burst_cap = match self.rate_limit_per_s {
            Some(rate) => rate.saturating_mul(MAX_BURST_PER_RATE).min(MAX_TENANT_BURST),
            None => MAX_TENANT_BURST,
        };
        if self.burst > burst_cap {
            return err(
                "invalid_burst",
                format!("burst must be at most {burst_cap} (10 x rate_limit_per_s, and at most {MAX_TENANT_BURST})"),
            );
        }
        if !(1..=MAX_TENANT_WEIGHT).contains(&self.weight) {
            return err("invalid_weight", format!("weight must be 1-{MAX_TENANT_WEIGHT}"));
        }
        Ok(())
    }
}

/// A stored response to a request made with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Hash of method, path and body of the original request.
    pub request_hash: String,
    pub status: u16,
    pub body: Vec<u8>,
    pub created_ms: u64,
}

/// An `Idempotency-Key` as stored: reserved while its request runs, then its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdempotencyEntry {
    /// A request with this key is running; the reservation lapses at `until_ms` (a crashed
    /// request must not hold the key forever).
    InProgress {
        request_hash: String,
        until_ms: u64,
    },
    Done(IdempotencyRecord),
}

/// What reserving an `Idempotency-Key` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The caller holds the key: run the request, then `complete` (or `release` on failure).
    Reserved,
    /// Another request with this key is running.
    InProgress,
    /// The key was used before: replay this response (the same request) ...
    Replay(IdempotencyRecord),
    /// ... or refuse, the key was used with a different request.
    Mismatch,
}

impl IdempotencyEntry {
    /// What a new request with `request_hash` finds at `now_ms` when this entry is stored
    /// (`None`: the key is free, reserve it). Records live `ttl_ms` from their creation;
    /// reservations until their lease lapses. Every backend applies this one rule.
    pub fn reservation(
        stored: Option<&IdempotencyEntry>,
        request_hash: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Option<Reservation> {
        match stored {
            Some(IdempotencyEntry::InProgress { until_ms, .. }) if *until_ms > now_ms => Some(Reservation::InProgress),
            Some(IdempotencyEntry::Done(record)) if record.created_ms.saturating_add(ttl_ms) > now_ms => {
                Some(if record.request_hash == request_hash {
                    Reservation::Replay(record.clone())
                } else {
                    Reservation::Mismatch
                })
            }
            // Lapsed or expired: the key is free again.
            _ => None,
        }
    }

    /// Whether a sweep at `now_ms` may remove this entry.
    pub fn expired(&self, now_ms: u64, ttl_ms: u64) -> bool {
        match self {
            IdempotencyEntry::InProgress { until_ms, .. } => *until_ms <= now_ms,
            IdempotencyEntry::Done(r) => r.created_ms.saturating_add(ttl_ms) <= now_ms,
        }
    }
}

/// One WhatsApp template component with its parameter templates (`{{ var }}` allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsAppComponent {
    pub kind: String,
    pub parameters: Vec<String>,
}

/// WhatsApp template reference: the approved template name/language and parameter templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsAppTemplate {
    pub template_name: String,
    pub language: String,
    pub components: Vec<WhatsAppComponent>,
}

/// A message template. Which fields are used depends on `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub id: TemplateId,
    pub tenant: TenantId,
    pub name: String,
    pub channel: Channel,
    /// SMS text, or email plain-text body.
    pub body: Option<String>,
    /// Email subject.
    pub subject: Option<String>,
    /// Email HTML body.
    pub html: Option<String>,
    pub whatsapp: Option<WhatsAppTemplate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audience {
    pub id: AudienceId,
    pub tenant: TenantId,
    pub name: String,
    pub recipient_count: u64,
    /// The id the next imported recipient gets (ids are dense, so buckets fill in order).
    pub next_recipient_id: u64,
    pub created_ms: u64,
}

/// A recipient to add; the store assigns its id and bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecipient {
    pub address: String,
    pub attrs: Vec<(String, String)>,
}

/// What adding recipients did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddedRecipients {
    pub added: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignStatus {
    Draft,
    Scheduled,
    Running,
    Paused,
    Completed,
    Cancelled,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Running => "running",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Completed => "completed",
            CampaignStatus::Cancelled => "cancelled",
        }
    }
}

/// A campaign definition; written by the control plane only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub tenant: TenantId,
    pub name: String,
    pub template: TemplateId,
    pub audience: AudienceId,
    pub rate_limit_per_s: Option<u32>,
    pub status: CampaignStatus,
    pub created_ms: u64,
    pub triggered_ms: Option<u64>,
    /// Bumped by every status change; changes are compare-and-set on it, so two racing
    /// requests cannot both win (`Catalog::update_campaign`).
    pub version: u64,
}

/// How far the chunk stage got; written by the chunk stage only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCheckpoint {
    /// Next recipient id to read.
    pub next_recipient: u64,
    /// Recipients emitted so far.
    pub emitted: u64,
    /// Next chunk sequence number.
    pub next_seq: u64,
    /// All recipients emitted and the campaign sealed.
    pub done: bool,
}

/// A message's status in the log. Reconcile decides transitions (see `stages::reconcile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageStatus {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    Suppressed,
    Cancelled,
    DeadLettered,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 8] = [
        MessageStatus::Queued,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
        MessageStatus::Suppressed,
        MessageStatus::Cancelled,
        MessageStatus::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
            MessageStatus::Suppressed => "suppressed",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::DeadLettered => "dead_lettered",
        }
    }

    /// Terminal: the message needs nothing more from Herald (a later receipt may still
    /// upgrade delivered → read or failed → delivered).
    pub fn is_terminal(self) -> bool {
        !matches!(self, MessageStatus::Queued | MessageStatus::Sent)
    }
}

/// One message's row in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRecord {
    pub recipient: RecipientId,
    pub address: String,
    pub status: MessageStatus,
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    pub error: Option<String>,
    pub trigger_ms: u64,
    /// Every status the message entered, with when (ms).
    pub history: Vec<(MessageStatus, u64)>,
}

/// Exact per-campaign counters: how many messages are currently in each status.
/// Written by reconcile only, in the same atomic write as the message rows it counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CampaignCounters {
    /// Total messages of the campaign, known once the chunk stage sealed it.
    pub total: Option<u64>,
    pub sent: u64,
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub cancelled: u64,
    pub dead_lettered: u64,
    /// When every message reached a terminal status.
    pub completed_ms: Option<u64>,
}

impl CampaignCounters {
    pub fn slot(&mut self, status: MessageStatus) -> Option<&mut u64> {
        match status {
            MessageStatus::Queued => None,
            MessageStatus::Sent => Some(&mut self.sent),
            MessageStatus::Delivered => Some(&mut self.delivered),
            MessageStatus::Read => Some(&mut self.read),
            MessageStatus::Failed => Some(&mut self.failed),
            MessageStatus::Suppressed => Some(&mut self.suppressed),
            MessageStatus::Cancelled => Some(&mut self.cancelled),
            MessageStatus::DeadLettered => Some(&mut self.dead_lettered),
        }
    }

    /// Messages in a terminal status.
    pub fn terminal(&self) -> u64 {
        self.delivered + self.read + self.failed + self.suppressed + self.cancelled + self.dead_lettered
    }

    /// Messages the log knows about.
    pub fn known(&self) -> u64 {
        self.terminal() + self.sent
    }
}

/// A send claim: recorded durably right before the provider is called for this message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Claim {
    /// The provider is (or was) being called for this attempt; outcome not yet known.
    InFlight { attempt: u32, at_ms: u64 },
    /// The call finished. A replay re-emits everything the call produced instead of calling
    /// again: the outcome, the dead letter (rebuilt from the message and `letter`) and, for
    /// providers without receipts, the delivered receipt.
    Done { attempt: u32, outcome: OutcomeKind, letter: Option<LetterInfo>, receipt: bool },
    /// The attempt failed transiently; attempt `attempt + 1` is due at `due_ms` (a replay
    /// schedules it again; a duplicate retry finds the claim moved on and does nothing).
    Retrying { attempt: u32, due_ms: u64 },
}

/// What a dead letter said, kept in the claim so a replay can write it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LetterInfo {
    pub reason: String,
    pub not_before_ms: Option<u64>,
}

/// A dead-lettered message kept for inspection and redrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntry {
    pub key: MessageKey,
    pub letter: DeadLetter,
}

/// One message-log row to write, with the provider-id index entry it implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogWrite {
    pub key: MessageKey,
    pub record: MessageRecord,
    /// `(provider, provider_message_id)` to index under the message's own tenant, when newly
    /// known. One tenant's entry never replaces another's: the index is scoped by tenant.
    pub index: Option<(String, String)>,
}

/// The width of a campaign timeline window: one point per window in which the counters moved.
pub const TIMELINE_STEP_MS: u64 = 5_000;

/// The start of the timeline window holding `at_ms`.
pub fn timeline_window(at_ms: u64) -> u64 {
    at_ms - at_ms % TIMELINE_STEP_MS
}

/// Everything one reconcile step writes (see `MessageLog::apply` for what is atomic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    pub writes: Vec<LogWrite>,
    pub counters: Vec<(TenantId, CampaignId, CampaignCounters)>,
    /// When reconcile built the batch: each counters row is also kept as the campaign's timeline
    /// point for the [`TIMELINE_STEP_MS`] window holding this time (the last write in a window
    /// wins), so the counters over time survive a page reload and a restart.
    pub at_ms: u64,
    pub dead_letters: Vec<DlqEntry>,
    /// DLQ entries a later attempt superseded (a redrive that went through).
    pub cleared_dead_letters: Vec<MessageKey>,
}

impl LogBatch {
    /// The batch split into one batch per campaign it touches (each keeps `at_ms`).
    pub fn by_campaign(self) -> std::collections::BTreeMap<(TenantId, CampaignId), LogBatch> {
        type Parts = std::collections::BTreeMap<(TenantId, CampaignId), LogBatch>;
        let mut parts = Parts::new();
        let at_ms = self.at_ms;
        fn part(parts: &mut Parts, at_ms: u64, t: TenantId, c: CampaignId) -> &mut LogBatch {
            parts.entry((t, c)).or_insert_with(|| LogBatch { at_ms, ..Default::default() })
        }
        for w in self.writes {
            part(&mut parts, at_ms, w.key.tenant, w.key.campaign).writes.push(w);
        }
        for (t, c, counters) in self.counters {
            part(&mut parts, at_ms, t, c).counters.push((t, c, counters));
        }
        for e in self.dead_letters {
            part(&mut parts, at_ms, e.key.tenant, e.key.campaign).dead_letters.push(e);
        }
        for k in self.cleared_dead_letters {
            part(&mut parts, at_ms, k.tenant, k.campaign).cleared_dead_letters.push(k);
        }
        parts
    }
}

/// The providers a tenant can configure (`PUT /v1/tenants/{id}/providers/{name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProviderKind {
    WhatsApp,
    Sms,
    Email,
    Webhook,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] =
        [ProviderKind::WhatsApp, ProviderKind::Sms, ProviderKind::Email, ProviderKind::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::WhatsApp => "whatsapp",
            ProviderKind::Sms => "sms",
            ProviderKind::Email => "email",
            ProviderKind::Webhook => "webhook",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A stable small number for keys (the position in [`ProviderKind::ALL`]; append only).
    pub fn ordinal(self) -> u32 {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u32
    }

    /// Whether a sender id of this provider names one thing in the world (a WhatsApp phone
    /// number id, an SMS number): then at most one tenant may own it, and provider webhooks
    /// are routed to that tenant by it. Webhook URLs and email from-addresses are not: each
    /// tenant's are its own.
    pub fn senders_are_global(self) -> bool {
        matches!(self, ProviderKind::WhatsApp | ProviderKind::Sms)
    }
}

/// One sending identity of a provider: a WhatsApp phone number id, an SMS from-number, an
/// email from-address, a webhook. Paced on its own at call time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderSettings {
    pub id: String,
    /// Calls per second (None: unpaced).
    pub rate_limit_per_s: Option<u32>,
    /// Calls above the rate allowed in any 1 s window.
    pub burst: u32,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmtpTls {
    /// Plain SMTP (local relays and tests only).
    None,
    /// Plain connect, then STARTTLS (required).
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// A tenant's non-secret settings for one provider. Secrets live sealed in [`ProviderConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderSettings {
    /// WhatsApp Cloud API; secrets `access_token`, `app_secret`, `verify_token`.
    WhatsApp {
        base_url: String,
        api_version: String,
        senders: Vec<SenderSettings>,
        /// Messaging tier: unique users per rolling 24 h (None: unlimited).
        daily_unique_limit: Option<u64>,
    },
    /// Twilio-shaped SMS API; secret `auth_token`.
    Sms { base_url: String, account_sid: String, status_callback_url: Option<String>, senders: Vec<SenderSettings> },
    /// SMTP; secret `password` (optional).
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
        username: Option<String>,
        /// `List-Unsubscribe` target; `{{ address }}` is replaced by the recipient's address.
        list_unsubscribe: String,
        senders: Vec<SenderSettings>,
    },
    /// POST JSON to a tenant URL, signed with secret `signing_secret`.
    Webhook { url: String, senders: Vec<SenderSettings> },
}

impl ProviderSettings {
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderSettings::WhatsApp { .. } => ProviderKind::WhatsApp,
            ProviderSettings::Sms { .. } => ProviderKind::Sms,
            ProviderSettings::Email { .. } => ProviderKind::Email,
            ProviderSettings::Webhook { .. } => ProviderKind::Webhook,
        }
    }

    pub fn senders(&self) -> &[SenderSettings] {
        match self {
            ProviderSettings::WhatsApp { senders, .. }
            | ProviderSettings::Sms { senders, .. }
            | ProviderSettings::Email { senders, .. }
            | ProviderSettings::Webhook { senders, .. } => senders,
        }
    }
}

/// A tenant's provider configuration as stored: settings in the clear, secrets sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderConfig {
    pub tenant: TenantId,
    pub settings: ProviderSettings,
    pub secrets: crate::secrets::Sealed,
    pub updated_ms: u64,
    /// Blind index (keyed HMAC, [`crate::secrets::SecretKey::blind_index`]) of the WhatsApp
    /// verify token, so the unauthenticated verification handshake finds its tenant without
    /// opening anyone's sealed secrets.
    pub verify_token_index: Option<[u8; 32]>,
}

mod quota;
pub use quota::{QuotaGrant, QuotaLedger};
