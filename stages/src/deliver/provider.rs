//! The `Provider` trait and how provider answers are classified.

use async_trait::async_trait;
use schemas::RenderedMessage;
use std::time::Duration;

/// What the engine does with a failed call (decided from the provider's own error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Transient (5xx, timeout, upgrade in progress): retry with backoff.
    Retry,
    /// The provider said "too fast" for this sender: slow the sender down (AIMD), retry.
    Pace,
    /// Quality / spam limit: slow the sender down sharply, alert, retry.
    SlowDown,
    /// Too many messages to this recipient: back off only this recipient, retry.
    RecipientBackoff,
    /// Will never succeed (undeliverable, template mismatch): fail with the reason.
    Permanent,
    /// Not now, and not soon (WhatsApp 131049, the per-user marketing cap): fail with the
    /// reason, redrivable from the DLQ after `retry_after`.
    RetryLater,
    /// The sender is blocked (policy): stop using it; fail what it would have sent.
    StopSender,
}

/// A classified provider error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub class: FailureClass,
    /// The provider's own code (e.g. WhatsApp `130429`, HTTP `503`).
    pub code: String,
    pub message: String,
    /// A retry delay the provider asked for, if any.
    pub retry_after: Option<Duration>,
    /// The request may have reached the provider (a timeout or a connection lost after it was
    /// sent): before re-sending, deliver waits for a receipt that would prove it arrived.
    pub maybe_received: bool,
}

/// How much of a provider's own error text Herald keeps (it is shown to the tenant in the
/// message log and the DLQ).
pub const MAX_ERROR_CHARS: usize = 200;

/// `text` cut to [`MAX_ERROR_CHARS`] characters.
pub fn clip(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

impl ProviderError {
    /// `code` and `message` are the provider's own error code and message (never its raw
    /// response body); both are cut to [`MAX_ERROR_CHARS`].
    pub fn new(class: FailureClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            code: clip(&code.into()),
            message: clip(&message.into()),
            retry_after: None,
            maybe_received: false,
        }
    }

    pub fn after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

/// The answer to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    Accepted { provider_message_id: String },
    Failed(ProviderError),
}

/// What a provider knows about a message whose call outcome Herald lost (crash mid-call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The provider has it: do not send again.
    Accepted { provider_message_id: String },
    /// The provider never received it: sending it now is not a duplicate.
    NotReceived,
    /// The provider cannot say (most real APIs): wait for its receipts instead of re-sending.
    Unknown,
}

/// A message provider (WhatsApp Cloud API, SMS, email, webhook, simulator).
#[async_trait]
pub trait Provider: Send + Sync {
    /// Scopes provider message ids in the index and in receipts.
    fn name(&self) -> &str;

    /// Sends one message from `sender` (a phone number id, a from-address, ...).
    async fn send(&self, sender: &str, message: &RenderedMessage) -> SendResult;

    /// Whether the provider reports delivery later (status webhooks). When it does not (SMTP:
    /// the server's `250` is the last word; a tenant webhook's 2xx), acceptance is recorded as
    /// delivered right away.
    fn sends_receipts(&self) -> bool {
        true
    }

    /// Whether the provider received `message` (see [`Lookup`]).
    async fn lookup(&self, _sender: &str, _message: &RenderedMessage) -> Lookup {
        Lookup::Unknown
    }
}
