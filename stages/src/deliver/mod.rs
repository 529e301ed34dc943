//! deliver: messages.ready (and delivery.retry) → provider calls → delivery.outcomes,
//! delivery.retry, delivery.dlq.
//!
//! **No duplicate sends.** Before any provider call, a claim `InFlight { attempt }` is written
//! durably for the message. A replayed message (crash, redelivery, restart) finds its claim:
//! `Done` re-emits the recorded outcome without calling; `InFlight` for the same attempt means
//! the previous process died mid-call, so the provider is asked (`Provider::lookup`) — sent
//! again only if the provider says it never received it; if it cannot say, the message is
//! marked failed with `outcome_unknown` and a later provider receipt can still upgrade it.
//!
//! **Pacing** per sender at call time (see [`pacing`]; routes per tenant and channel in
//! [`senders`]). **Classification** of the provider's answer ([`provider::FailureClass`]):
//! - accepted → outcome;
//! - retry (5xx, timeouts) → `delivery.retry` with exponential backoff + jitter, at most
//!   `max_attempts` and `max_age`, then dead-lettered with the last error;
//! - pace / slow down → the sender's rate drops (AIMD) and the message retries; recipient
//!   back-off → only that message waits (~4^n s); these are not the message's fault, so they
//!   may take `4 × max_attempts`;
//! - stop sender → the sender takes no more calls (alert); the message retries on another live
//!   sender of the route, or fails when none is left;
//! - retry later (WhatsApp 131049) → failed, in the DLQ, not redrivable before the time;
//! - permanent → failed with the reason, also kept in the DLQ for inspection and redrive.
//!
//! Nothing is dropped silently.
//!
//! It is not: the throttle (who goes next) nor reconcile (what the log says).

pub mod pacing;
pub mod provider;
pub mod providers;
pub mod senders;
pub mod simulator;

use crate::control::CampaignControl;
use crate::SharedStore;
use futures::stream::{self, StreamExt};
use pacing::{Route, Sender};
use pipeline::{topics, Emitter, Input, Shutdown, Stage, StageError};
use provider::{FailureClass, Lookup, ProviderError, SendResult};
use rand::Rng;
use schemas::*;
use senders::Senders;
use std::collections::HashMap;
use std::result::Result;
use std::sync::Arc;
use std::time::Duration;
use storage::{CampaignStatus, Claim, MessageStatus};

#[derive(Debug, Clone)]
pub struct DeliverConfig {
    /// Concurrent provider calls per batch.
    pub concurrency: usize,
    /// Attempts per message on transient failures before it is dead-lettered (pace and
    /// recipient back-off signals may take four times as many).
    pub max_attempts: u32,
    /// A message still failing this long after its campaign was triggered is dead-lettered.
    pub max_age: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Each HTTP provider call's timeout.
    pub call_timeout: Duration,
    /// After a call that may have reached the provider (timeout, connection lost), how long to
    /// wait for a receipt proving it did before sending again.
    pub receipt_grace: Duration,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            // 1 s doubling to 60 s over 8 attempts: ~3 minutes of retries, enough to ride out a
            // provider outage of a minute or two before anything is dead-lettered.
            max_attempts: 8,
            max_age: Duration::from_secs(24 * 3_600),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            call_timeout: providers::CALL_TIMEOUT,
            receipt_grace: Duration::from_secs(30),
        }
    }
}

/// The deliver stage (consumes `messages.ready`).
pub struct Deliver {
    store: SharedStore,
    senders: Arc<Senders>,
    control: Arc<CampaignControl>,
    config: DeliverConfig,
}

/// What to do with one message of a batch after looking at its claim.
enum Plan {
    Send(RenderedMessage),
    Emit(Outcome),
    /// A receipt proved an earlier attempt arrived: record it as that attempt's acceptance.
    Proven(Outcome),
    Retry(RenderedMessage),
    Skip,
}

/// What happened to one message's call slot.
enum Attempt {
    Called(Arc<Sender>, SendResult),
    /// Not called: the campaign was paused or cancelled by the time its slot came.
    Held(CampaignStatus),
    /// Not called: every sender of the route is stopped.
    NoSender,
}

/// The result of one message's call, before it is written down.
struct Done {
    message: RenderedMessage,
    attempt: u32,
    result: Attempt,
}

/// What the classification of one answer decided.
enum Verdict {
    Outcome(OutcomeKind, Option<Box<DeadLetter>>),
    Retry(Duration),
}

impl Deliver {
    pub fn new(
        store: SharedStore,
        senders: Arc<Senders>,
        control: Arc<CampaignControl>,
        config: DeliverConfig,
    ) -> Arc<Self> {
        Arc::new(Self { store, senders, control, config })
    }

    /// Decides per message from its claim; asks the provider about calls lost mid-flight.
    async fn plan(&self, route: &Route, messages: Vec<RenderedMessage>) -> crate::Result<Vec<Plan>> {
        let keys: Vec<MessageKey> = messages.iter().map(|m| m.key).collect();
        let claims = self.store.get_claims(&keys).await?;
        let lookup_sender = route.senders.first().map(|s| s.id.as_str()).unwrap_or_default();
        // A message about to be sent again after a failed attempt: did a receipt show that the
        // provider got it after all (a timeout after the request went out)? Then it is not sent
        // twice; the receipt's provider message id becomes the acceptance.
        let resending: Vec<MessageKey> = messages
            .iter()
            .zip(&claims)
            .filter(|(m, c)| matches!(c, Some(Claim::Retrying { attempt: a }) if *a < m.attempt + 1))
            .map(|(m, _)| m.key)
            .collect();
        let mut received: HashMap<MessageId, String> = HashMap::new();
        if !resending.is_empty() {
            for (key, row) in resending.iter().zip(self.store.get_messages(&resending).await?) {
                let Some(row) = row else { continue };
                if matches!(row.status, MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read) {
                    if let Some(id) = row.provider_message_id {
                        received.insert(key.id, id);
                    }
                }
            }
        }
        let mut plans = Vec::with_capacity(messages.len());
        for (message, claim) in messages.into_iter().zip(claims) {
            let attempt = message.attempt + 1;
            plans.push(match claim {
                None => Plan::Send(message),
                Some(Claim::Done { outcome, attempt: done_at }) => Plan::Emit(outcome_of(&message, outcome, done_at)),
                Some(Claim::Retrying { attempt: a }) if a == attempt => Plan::Retry(message),
                Some(Claim::Retrying { attempt: a }) if a < attempt => match received.remove(&message.key.id) {
                    Some(provider_message_id) => {
                        tracing::info!(message = %message.key.id, "a receipt shows the provider got it; not re-sent");
                        let kind =
                            OutcomeKind::Accepted { provider: route.provider.name().to_string(), provider_message_id };
                        Plan::Proven(outcome_of(&message, kind, a))
                    }
                    None => Plan::Send(message),
                },
                Some(Claim::InFlight { attempt: a, .. }) if a == attempt => {
                    match route.provider.lookup(lookup_sender, &message).await {
                        Lookup::NotReceived => Plan::Send(message),
                        Lookup::Accepted { provider_message_id } => {
                            let kind = OutcomeKind::Accepted {
                                provider: route.provider.name().to_string(),
                                provider_message_id,
                            };
                            Plan::Emit(outcome_of(&message, kind, attempt))
                        }
                        Lookup::Unknown => Plan::Emit(outcome_of(
                            &message,
                            OutcomeKind::Failed {
                                code: "outcome_unknown".into(),
                                reason:
                                    "the process stopped during the provider call; not re-sent to avoid a duplicate"
                                        .into(),
                            },
                            attempt,
                        )),
                    }
                }
                Some(Claim::InFlight { attempt: a, .. }) if a < attempt => Plan::Send(message),
                // A newer attempt exists: this record is a stale duplicate.
                Some(_) => Plan::Skip,
            });
        }
        Ok(plans)
    }

    /// Adapts a sender to a failed call, right when the answer arrives (not at the end of the
    /// batch), so the calls still waiting for a slot already go at the new pace or elsewhere.
    fn adapt(sender: &Sender, tenant: TenantId, e: &ProviderError) {
        match e.class {
            FailureClass::Pace | FailureClass::SlowDown => {
                let sharp = e.class == FailureClass::SlowDown;
                if let Some(rate) = sender.slow_down(if sharp { pacing::SHARP_DECREASE } else { pacing::DECREASE }) {
                    tracing::warn!(%tenant, sender = %sender.id, code = %e.code, rate, "AIMD: sender slowed down");
                }
                if sharp {
                    tracing::error!(%tenant, sender = %sender.id, code = %e.code, "ALERT: provider quality limit; sender slowed sharply");
                }
            }
            FailureClass::StopSender if sender.stop() => {
                tracing::error!(%tenant, sender = %sender.id, code = %e.code, message = %e.message, "ALERT: sender stopped by the provider");
            }
            _ => {}
        }
    }

    /// Classifies a failed call: retry later, or settle the message.
    fn judge(
        &self,
        route: &Route,
        sender: &Sender,
        message: &RenderedMessage,
        attempt: u32,
        e: ProviderError,
    ) -> Verdict {
        let age = Duration::from_millis(now_ms().saturating_sub(message.trigger_ms));
        let within = |limit: u32| attempt < limit && age < self.config.max_age;
        let retry = match e.class {
            FailureClass::Retry => within(self.config.max_attempts),
            FailureClass::Pace | FailureClass::SlowDown | FailureClass::RecipientBackoff => {
                within(self.config.max_attempts.saturating_mul(4))
            }
            FailureClass::StopSender => route.has_other_live(sender) && within(self.config.max_attempts),
            FailureClass::Permanent | FailureClass::RetryLater => false,
        };
        if retry {
            return Verdict::Retry(retry_wait(&self.config, attempt, &e));
        }
        let reason = format!("{}: {}", e.code, e.message);
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
        let letter = DeadLetter { message: message.clone(), reason, attempts: attempt, at_ms: now_ms(), not_before_ms };
        Verdict::Outcome(kind, Some(Box::new(letter)))
    }

    /// Delivers messages of one tenant; everything decided is emitted on `out`.
    pub async fn deliver(
        &self,
        tenant: TenantId,
        messages: Vec<RenderedMessage>,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let Some(channel) = messages.first().map(|m| m.content.channel()) else { return Ok(()) };
        let route = self.senders.route(tenant, channel).await?;
        let plans = self.plan(&route, messages).await?;
        let mut outcomes = Vec::new();
        let mut retries = Vec::new();
        let mut to_send = Vec::new();
        let mut proven = Vec::new();
        for plan in plans {
            match plan {
                Plan::Send(m) => to_send.push(m),
                Plan::Emit(o) => outcomes.push(OutcomeEvent::Message(o)),
                Plan::Proven(o) => {
                    proven.push((o.key, Claim::Done { attempt: o.attempts, outcome: o.kind.clone() }));
                    outcomes.push(OutcomeEvent::Message(o));
                }
                Plan::Retry(m) => retries.push(m),
                Plan::Skip => {}
            }
        }

        // The claim is durable before the provider hears of the message.
        let now = now_ms();
        let claims: Vec<_> =
            to_send.iter().map(|m| (m.key, Claim::InFlight { attempt: m.attempt + 1, at_ms: now })).collect();
        self.store.put_claims(&claims).await.map_err(crate::Error::from)?;

        // The campaign's status is checked at each call slot when calls are paced (a paced batch
        // can take seconds, and a pause must stop calls within the control TTL); an unpaced batch
        // finishes in milliseconds, so one check before it is enough.
        let per_call = route.is_paced();
        let batch_status = match to_send.first() {
            Some(m) if !per_call => Some(self.control.status(m.key.tenant, m.key.campaign).await),
            _ => None,
        };
        let results: Vec<Done> = stream::iter(to_send)
            .map(|message| {
                let route = route.clone();
                let batch_status = batch_status.as_ref().map(|s| s.as_ref().map(|s| *s).map_err(|_| ()));
                async move {
                    let attempt = message.attempt + 1;
                    let held = |status: Result<CampaignStatus, ()>| match status {
                        Ok(s @ (CampaignStatus::Paused | CampaignStatus::Cancelled)) => Some(s),
                        _ => None,
                    };
                    let (tenant, campaign) = (message.key.tenant, message.key.campaign);
                    let current = || async move {
                        match batch_status {
                            Some(s) => s,
                            None => self.control.status(tenant, campaign).await.map_err(|_| ()),
                        }
                    };
                    // A held message never takes a pacing slot (a paused or cancelled campaign
                    // must not hold up the sender's other work): the wait for a slot ends when
                    // the campaign is paused or cancelled, and the status is checked again once
                    // the slot comes.
                    let until_held = async {
                        loop {
                            if let Some(s) = held(current().await) {
                                return s;
                            }
                            tokio::time::sleep(self.control.ttl()).await;
                        }
                    };
                    let sender = if per_call {
                        tokio::select! {
                            biased;
                            s = until_held => return Done { attempt, message, result: Attempt::Held(s) },
                            sender = route.acquire() => sender,
                        }
                    } else {
                        // Unpaced: no wait for a slot, and the status was read once for the batch.
                        if let Some(s) = held(current().await) {
                            return Done { attempt, message, result: Attempt::Held(s) };
                        }
                        route.acquire().await
                    };
                    let Some(sender) = sender else {
                        return Done { attempt, message, result: Attempt::NoSender };
                    };
                    let result = match held(current().await) {
                        Some(s) => Attempt::Held(s),
                        None => {
                            let answer = route.provider.send(&sender.id, &message).await;
                            if let SendResult::Failed(e) = &answer {
                                Self::adapt(&sender, message.key.tenant, e);
                            }
                            Attempt::Called(sender, answer)
                        }
                    };
                    Done { attempt, message, result }
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;

        let mut settled = proven;
        settled.reserve(results.len());
        let mut letters = Vec::new();
        let mut receipts = Vec::new();
        let mut fresh_accepts = 0u64;
        let mut not_before = 0u64;
        for Done { mut message, attempt, result } in results {
            let verdict = match result {
                Attempt::Held(status) => {
                    // Never called: the claim goes back to the previous attempt.
                    if status == CampaignStatus::Cancelled {
                        settled
                            .push((message.key, Claim::Done { attempt: attempt - 1, outcome: OutcomeKind::Cancelled }));
                        outcomes.push(OutcomeEvent::Message(outcome_of(&message, OutcomeKind::Cancelled, attempt - 1)));
                    } else {
                        settled.push((message.key, Claim::Retrying { attempt: attempt - 1 }));
                        not_before = not_before.max(now_ms() + 500);
                        retries.push(message);
                    }
                    continue;
                }
                Attempt::NoSender => {
                    let e = ProviderError::new(
                        FailureClass::Permanent,
                        "sender_stopped",
                        "every sender of this tenant for the channel was stopped by the provider",
                    );
                    Verdict::Outcome(
                        OutcomeKind::Failed { code: e.code.clone(), reason: e.message.clone() },
                        Some(Box::new(DeadLetter {
                            message: message.clone(),
                            reason: format!("{}: {}", e.code, e.message),
                            attempts: attempt,
                            at_ms: now_ms(),
                            not_before_ms: None,
                        })),
                    )
                }
                Attempt::Called(_, SendResult::Accepted { provider_message_id }) => {
                    fresh_accepts += 1;
                    Verdict::Outcome(
                        OutcomeKind::Accepted { provider: route.provider.name().to_string(), provider_message_id },
                        None,
                    )
                }
                Attempt::Called(sender, SendResult::Failed(e)) => {
                    tracing::debug!(message = %message.key.id, attempt, code = %e.code, "provider refused");
                    self.judge(&route, &sender, &message, attempt, e)
                }
            };
            match verdict {
                Verdict::Retry(wait) => {
                    not_before = not_before.max(now_ms() + wait.as_millis() as u64);
                    settled.push((message.key, Claim::Retrying { attempt }));
                    message.attempt = attempt;
                    retries.push(message);
                }
                Verdict::Outcome(kind, letter) => {
                    if let OutcomeKind::Accepted { provider, provider_message_id } = &kind {
                        if !route.provider.sends_receipts() {
                            receipts.push(Receipt {
                                provider: provider.clone(),
                                provider_message_id: provider_message_id.clone(),
                                key: Some(message.key),
                                status: ReceiptStatus::Delivered,
                                at_ms: now_ms(),
                                error: None,
                            });
                        }
                    }
                    settled.push((message.key, Claim::Done { attempt, outcome: kind.clone() }));
                    outcomes.push(OutcomeEvent::Message(outcome_of(&message, kind, attempt)));
                    letters.extend(letter.map(|l| *l));
                }
            }
        }
        self.store.put_claims(&settled).await.map_err(crate::Error::from)?;
        if route.quota.is_some() {
            // Messaging-tier counts move from release time to call time (see `quota`).
            if fresh_accepts > 0 {
                self.store.restamp_quota(tenant, fresh_accepts, now_ms()).await.map_err(crate::Error::from)?;
            }
        }

        let emit = |e: pipeline::Error| StageError::from(crate::Error::from(e));
        if !outcomes.is_empty() {
            out.emit(&topics::OUTCOMES, tenant, &OutcomeBatch { tenant, events: outcomes }).map_err(emit)?;
        }
        if !retries.is_empty() {
            let not_before = not_before.max(now_ms() + self.config.backoff_base.as_millis() as u64);
            out.emit(&topics::RETRY, tenant, &RetryBatch { tenant, not_before_ms: not_before, messages: retries })
                .map_err(emit)?;
        }
        if !letters.is_empty() {
            out.emit(&topics::DLQ, tenant, &DeadLetterBatch { tenant, letters }).map_err(emit)?;
        }
        if !receipts.is_empty() {
            out.emit(&topics::RECEIPTS, tenant, &ReceiptBatch { tenant, receipts }).map_err(emit)?;
        }
        Ok(())
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

fn outcome_of(message: &RenderedMessage, kind: OutcomeKind, attempts: u32) -> Outcome {
    Outcome {
        key: message.key,
        recipient: message.recipient,
        address: message.address.clone(),
        kind,
        attempts,
        at_ms: now_ms(),
        trigger_ms: message.trigger_ms,
    }
}

impl Stage for Deliver {
    type In = MessageBatch;

    fn name(&self) -> &'static str {
        "deliver"
    }

    async fn process(&self, batch: Vec<Input<MessageBatch>>, out: &mut Emitter) -> Result<(), StageError> {
        for input in batch {
            self.deliver(input.value.tenant, input.value.messages, out).await?;
        }
        Ok(())
    }
}

/// The retry side of deliver (consumes `delivery.retry`): waits until a batch is due, then
/// delivers it like a fresh one. On shutdown it leaves the waiting batch uncommitted.
pub struct Redeliver {
    deliver: Arc<Deliver>,
    shutdown: Shutdown,
}

impl Redeliver {
    pub fn new(deliver: Arc<Deliver>, shutdown: Shutdown) -> Self {
        Self { deliver, shutdown }
    }
}

impl Stage for Redeliver {
    type In = RetryBatch;

    fn name(&self) -> &'static str {
        "redeliver"
    }

    async fn process(&self, batch: Vec<Input<RetryBatch>>, out: &mut Emitter) -> Result<(), StageError> {
        for input in batch {
            let wait = Duration::from_millis(input.value.not_before_ms.saturating_sub(now_ms()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.wait() => return Err(StageError::retry(Duration::ZERO, "shutting down before the retry was due")),
            }
            self.deliver.deliver(input.value.tenant, input.value.messages, out).await?;
        }
        Ok(())
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
