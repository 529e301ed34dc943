//! The reconcile lattice: how one event merges into a message row (the rules are in the
//! `reconcile` module docs). Pure functions over a row and an event: no store, no cache, no
//! counters (the caller counts the transitions [`apply_event`] reports).

use schemas::*;
use storage::{MessageRecord, MessageStatus};

/// Rank of a status in the reconcile lattice (see the module docs).
pub fn rank(status: MessageStatus) -> u8 {
    match status {
        MessageStatus::Queued => 0,
        MessageStatus::Cancelled => 1,
        MessageStatus::Sent => 2,
        MessageStatus::Failed => 3,
        MessageStatus::DeadLettered => 4,
        MessageStatus::Delivered => 5,
        MessageStatus::Read => 6,
        MessageStatus::Suppressed => 7,
    }
}

/// One thing that happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    pub status: MessageStatus,
    pub at_ms: u64,
    pub recipient: Option<RecipientId>,
    pub address: Option<String>,
    pub attempts: u32,
    pub trigger_ms: u64,
    pub provider_message_id: Option<(String, String)>,
    pub error: Option<String>,
}

impl MessageEvent {
    pub fn from_outcome(o: &Outcome) -> Self {
        let (status, pmid, error) = match &o.kind {
            OutcomeKind::Accepted { provider, provider_message_id } => {
                (MessageStatus::Sent, Some((provider.clone(), provider_message_id.clone())), None)
            }
            OutcomeKind::Failed { code, reason } => (MessageStatus::Failed, None, Some(format!("{code}: {reason}"))),
            OutcomeKind::Suppressed => (MessageStatus::Suppressed, None, None),
            OutcomeKind::Cancelled => (MessageStatus::Cancelled, None, None),
            OutcomeKind::DeadLettered { reason } => (MessageStatus::DeadLettered, None, Some(reason.clone())),
        };
        Self {
            status,
            at_ms: o.at_ms,
            recipient: Some(o.recipient),
            address: Some(o.address.clone()),
            attempts: o.attempts,
            trigger_ms: o.trigger_ms,
            provider_message_id: pmid,
            error,
        }
    }

    pub fn from_receipt(r: &Receipt) -> Self {
        let status = match r.status {
            ReceiptStatus::Sent => MessageStatus::Sent,
            ReceiptStatus::Delivered => MessageStatus::Delivered,
            ReceiptStatus::Read => MessageStatus::Read,
            ReceiptStatus::Failed => MessageStatus::Failed,
        };
        Self {
            status,
            at_ms: r.at_ms,
            recipient: None,
            address: None,
            attempts: 0,
            trigger_ms: 0,
            provider_message_id: Some((r.provider.clone(), r.provider_message_id.clone())),
            error: r.error.clone(),
        }
    }
}

/// What applying one event did to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The previous status when the status changed (`Some(None)`: the row is new).
    pub transition: Option<Option<MessageStatus>>,
    /// Whether anything in the row changed (it must be written).
    pub changed: bool,
    /// Whether the row learned its provider message id (the index needs an entry).
    pub learned_provider_id: bool,
    /// A later attempt's acceptance superseded a failure (its dead letter is cleared).
    pub superseded: bool,
}

/// Applies `event` to a message row (see the module docs for the merge rule).
pub fn apply_event(row: &mut Option<MessageRecord>, event: &MessageEvent) -> Applied {
    let mut applied = Applied { changed: row.is_none(), ..Applied::default() };
    let record = row.get_or_insert_with(|| MessageRecord {
        recipient: event.recipient.unwrap_or(RecipientId(0)),
        address: event.address.clone().unwrap_or_default(),
        status: MessageStatus::Queued,
        attempts: 0,
        provider_message_id: None,
        error: None,
        trigger_ms: event.trigger_ms,
        history: Vec::new(),
    });
    let was_new = record.history.is_empty() && record.status == MessageStatus::Queued;
    if let Some(recipient) = event.recipient.filter(|r| *r != record.recipient) {
        record.recipient = recipient;
        applied.changed = true;
    }
    if let Some(address) = event.address.as_ref().filter(|_| record.address.is_empty()) {
        record.address = address.clone();
        applied.changed = true;
    }
    if record.trigger_ms == 0 && event.trigger_ms != 0 {
        record.trigger_ms = event.trigger_ms;
        applied.changed = true;
    }
    let previous_attempts = record.attempts;
    let known_provider_id = record.provider_message_id.clone();
    if event.attempts > record.attempts {
        record.attempts = event.attempts;
        applied.changed = true;
    }
    if let (None, Some((_, id))) = (&record.provider_message_id, &event.provider_message_id) {
        record.provider_message_id = Some(id.clone());
        applied.changed = true;
        applied.learned_provider_id = true;
    }
    let failure = |s: MessageStatus| matches!(s, MessageStatus::Failed | MessageStatus::DeadLettered);
    // Attempts order what Herald itself decided (receipts carry no attempt): a later attempt's
    // acceptance supersedes an earlier attempt's failure (a DLQ redrive), and an earlier
    // attempt's failure never overrides a later attempt. A failure reported by a receipt for the
    // very call being accepted (same provider message id; receipts often beat the outcome to
    // reconcile) is that attempt's own failure, not an earlier one.
    let same_call = matches!((&known_provider_id, &event.provider_message_id), (Some(k), Some((_, id))) if k == id);
    let supersedes = event.status == MessageStatus::Sent
        && failure(record.status)
        && event.attempts > previous_attempts
        && !same_call;
    let stale = failure(event.status) && event.attempts > 0 && event.attempts < previous_attempts;
    if stale || (!supersedes && rank(event.status) <= rank(record.status)) {
        return applied;
    }
    let previous = record.status;
    record.status = event.status;
    if event.error.is_some() || matches!(event.status, MessageStatus::Failed | MessageStatus::DeadLettered) {
        record.error = event.error.clone().or(record.error.take());
    }
    record.history.push((event.status, event.at_ms));
    applied.changed = true;
    applied.transition = Some(if was_new { None } else { Some(previous) });
    applied.superseded = supersedes;
    applied
}

pub(super) fn is_failure(status: MessageStatus) -> bool {
    matches!(status, MessageStatus::Failed | MessageStatus::DeadLettered)
}
