//! What a provider's answer means for the message and its sender: retry (when), settle (with
//! which outcome and dead letter), and how the sender adapts (AIMD, stop).

use super::pacing::{self, Route, Sender};
use super::provider::{FailureClass, ProviderError};
use super::DeliverConfig;
use rand::Rng;
use schemas::*;
use std::time::Duration;
use storage::{LetterInfo, SharedState};

/// What the classification of one failed call decided.
pub(super) enum Verdict {
    Outcome { kind: OutcomeKind, letter: Option<LetterInfo> },
    Retry(Duration),
}

/// Classifies a failed call: retry later, or settle the message.
pub(super) fn judge(
    config: &DeliverConfig,
    route: &Route,
    sender: &Sender,
    message: &RenderedMessage,
    attempt: u32,
    e: &ProviderError,
) -> Verdict {
    let age = Duration::from_millis(now_ms().saturating_sub(message.trigger_ms));
    let within = |limit: u32| attempt < limit && age < config.max_age;
    let retry = match e.class {
        FailureClass::Retry => within(config.max_attempts),
        FailureClass::Pace | FailureClass::SlowDown | FailureClass::RecipientBackoff => {
            within(config.max_attempts.saturating_mul(4))
        }
        FailureClass::StopSender => route.has_other_live(sender) && within(config.max_attempts),
        FailureClass::Permanent | FailureClass::RetryLater => false,
    };
    if retry {
        return Verdict::Retry(retry_wait(config, attempt, e));
    }
    let reason = DeadLetter::reason_of(&e.code, &e.message);
    let gave_up = matches!(
        e.class,
        FailureClass::Retry | FailureClass::Pace | FailureClass::SlowDown | FailureClass::RecipientBackoff
    );
    let kind = if gave_up {
        OutcomeKind::DeadLettered { reason: format!("gave up after {attempt} attempts; last error {reason}") }
    } else {
        OutcomeKind::Failed { code: e.code.clone(), reason: reason.clone() }
    };
    let not_before_ms = match e.class {
        FailureClass::RetryLater => e.retry_after.map(|w| now_ms() + w.as_millis() as u64),
        _ => None,
    };
    Verdict::Outcome { kind, letter: Some(LetterInfo { reason, not_before_ms }) }
}

/// The failure of a message none of whose route's senders may send.
pub(super) fn no_sender() -> (OutcomeKind, LetterInfo) {
    let e = ProviderError::new(
        FailureClass::Permanent,
        "sender_stopped",
        "every sender of this tenant for the channel was stopped by the provider",
    );
    let reason = DeadLetter::reason_of(&e.code, &e.message);
    (OutcomeKind::Failed { code: e.code, reason: reason.clone() }, LetterInfo { reason, not_before_ms: None })
}

/// Adapts a sender to a failed call, right when the answer arrives, so the calls still
/// waiting for a slot already go at the new pace or elsewhere. Returns whether the sender was
/// stopped by this answer (the caller records it in the shared state).
pub(super) fn adapt(sender: &Sender, tenant: TenantId, e: &ProviderError) -> bool {
    match e.class {
        FailureClass::Pace | FailureClass::SlowDown => {
            let sharp = e.class == FailureClass::SlowDown;
            if let Some(rate) = sender.slow_down(if sharp { pacing::SHARP_DECREASE } else { pacing::DECREASE }) {
                tracing::warn!(%tenant, sender = %sender.id, code = %e.code, rate, "AIMD: sender slowed down");
            }
            if sharp {
                tracing::error!(%tenant, sender = %sender.id, code = %e.code, "ALERT: provider quality limit; sender slowed sharply");
            }
            false
        }
        FailureClass::StopSender if sender.stop() => {
            tracing::error!(%tenant, sender = %sender.id, code = %e.code, message = %e.message, "ALERT: sender stopped by the provider");
            true
        }
        _ => false,
    }
}

/// Records a stopped sender for every worker.
pub(super) async fn record_stop(state: &dyn SharedState, tenant: TenantId, provider: &str, sender: &str) {
    if let Err(e) = state.stop_sender(tenant, provider, sender).await {
        tracing::error!(%tenant, provider, sender, error = %e, "could not record the stopped sender; other workers learn it from the provider");
    }
}

/// How long a message waits before its next attempt after `e`: the provider's `Retry-After`
/// (a hint, capped at `backoff_max` like Herald's own backoff: a hostile or broken endpoint must
/// not park messages for hours), else exponential backoff with jitter; at least the receipt
/// grace when the call may have reached the provider.
pub fn retry_wait(config: &DeliverConfig, attempt: u32, e: &ProviderError) -> Duration {
    let backoff = || {
        let base = match e.class {
            // A recipient pair-rate limit backs off ~4^n seconds (WhatsApp 131056).
            FailureClass::RecipientBackoff => Duration::from_secs(4u64.saturating_pow(attempt.min(6))),
            FailureClass::Pace | FailureClass::SlowDown => Duration::from_secs(1),
            _ => config.backoff_base.saturating_mul(1 << attempt.min(16)),
        };
        let jitter = rand::rng().random_range(0.0..0.25);
        base.mul_f64(1.0 + jitter).min(config.backoff_max)
    };
    let wait = e.retry_after.map(|w| w.min(config.backoff_max)).unwrap_or_else(backoff);
    if e.maybe_received {
        wait.max(config.receipt_grace)
    } else {
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_are_capped_and_respect_the_receipt_grace() {
        let config = DeliverConfig::default();
        let hostile = ProviderError::new(FailureClass::Retry, "503", "busy").after(Duration::from_secs(86_400));
        assert_eq!(retry_wait(&config, 1, &hostile), config.backoff_max, "Retry-After is capped");
        let polite = ProviderError::new(FailureClass::Retry, "503", "busy").after(Duration::from_secs(3));
        assert_eq!(retry_wait(&config, 1, &polite), Duration::from_secs(3));
        for attempt in 0..20 {
            let own = retry_wait(&config, attempt, &ProviderError::new(FailureClass::Retry, "503", "busy"));
            assert!(own <= config.backoff_max && own >= config.backoff_base, "{attempt}: {own:?}");
        }
        let mut maybe = ProviderError::new(FailureClass::Retry, "timeout", "t");
        maybe.maybe_received = true;
        assert!(retry_wait(&config, 1, &maybe) >= config.receipt_grace);
    }
}
