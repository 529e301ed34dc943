//! Deciding, from its claim, what to do with each message about to get a call slot.
//!
//! With `n = message.attempt + 1` the attempt this record asks for:
//!
//! | claim | meaning | plan |
//! |---|---|---|
//! | none | never called | send |
//! | `Done { a }` | settled (a replay, or a duplicate record) | re-emit outcome, letter, receipt |
//! | `Done { a = n - 1, failed }` + redrive | an operator redrove the dead letter | send |
//! | `Retrying { a = n }` | replay of the step that scheduled the retry | re-emit the retry at its due time |
//! | `Retrying { a = n - 1 }` | the retry this record is | send (unless a receipt proved attempt `a` arrived) |
//! | `Retrying { a > n }` | a stale duplicate | skip |
//! | `InFlight { a = n }` | the process stopped during this very call | ask the provider; if it cannot say, retry after the receipt grace (unless a receipt proves it arrived) |
//! | `InFlight { a < n }` | an older call lost its settle | send |
//! | `InFlight { a > n }` | a stale duplicate | skip |
//!
//! The claim read here is the `expected` value of the compare-and-set that claims the message
//! right before its call, so two workers can never both call it.

use super::call::Caller;
use super::provider::Lookup;
use super::settle::Settlement;
use schemas::*;
use std::collections::HashMap;
use storage::{Claim, MessageStatus};

/// A message that needs a call, with the claim it was planned from.
pub(super) struct Sendable {
    pub message: RenderedMessage,
    /// The claim its compare-and-set expects.
    pub expected: Option<Claim>,
    /// `expected` was read from shared state (false: a first attempt assumed unclaimed; if the
    /// compare-and-set finds a claim after all, the message is planned again from a read).
    pub read: bool,
}

impl Sendable {
    fn read(message: RenderedMessage, expected: Option<Claim>) -> Self {
        Self { message, expected, read: true }
    }
}

/// Plans `messages`; replays and proven acceptances go to `settle`, the ones to call are
/// returned in order. First attempts are planned without a read unless `read_all` (almost every
/// one is unclaimed, and the claim's compare-and-set reads it anyway: one store read per
/// message instead of two); everything else is planned from its claim.
pub(super) async fn plan(
    caller: &Caller<'_>,
    messages: Vec<RenderedMessage>,
    redrive: bool,
    read_all: bool,
    settle: &mut Settlement,
) -> crate::Result<Vec<Sendable>> {
    if !read_all && !redrive && messages.iter().all(|m| m.attempt == 0) {
        return Ok(messages.into_iter().map(|message| Sendable { message, expected: None, read: false }).collect());
    }
    let keys: Vec<MessageKey> = messages.iter().map(|m| m.key).collect();
    let claims = caller.deliver.state.get_claims(&keys).await?;
    let received = received_earlier(caller, &messages, &claims).await?;
    let mut sendable = Vec::with_capacity(messages.len());
    for (message, claim) in messages.into_iter().zip(claims) {
        let n = message.attempt + 1;
        let was_received = received.get(&message.key.id);
        match (plan_step(claim.as_ref(), n, redrive, was_received.is_some()), claim) {
            (PlanStep::Send, expected) => sendable.push(Sendable::read(message, expected)),
            (PlanStep::ReplayDone, Some(Claim::Done { attempt, outcome, letter, receipt })) => {
                settle.replay_done(&message, attempt, outcome, letter, receipt)
            }
            (PlanStep::ReplayRetry, Some(Claim::Retrying { attempt, due_ms })) => {
                settle.replay_retry(message, attempt, due_ms)
            }
            (PlanStep::Received, Some(expected @ Claim::Retrying { attempt, .. })) => {
                tracing::info!(message = %message.key.id, "a receipt shows the provider got it; not re-sent");
                let kind = OutcomeKind::Accepted {
                    provider: settle.provider().to_string(),
                    provider_message_id: was_received.cloned().unwrap_or_default(),
                };
                settle.done(&message, attempt, kind, None, Some(expected));
            }
            (PlanStep::AskProvider, Some(expected)) => {
                if let Some(m) = lost_call(caller, message, expected, settle).await {
                    sendable.push(m);
                }
            }
            // Skip, and (unreachable) steps whose claim does not match.
            _ => {}
        }
    }
    Ok(sendable)
}

/// What to do with a message about to get a call slot (the table in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStep {
    /// Claim it (compare-and-set against the claim read) and call the provider.
    Send,
    /// Settled before: re-emit what that call produced (`Claim::Done`).
    ReplayDone,
    /// A replay of the step that scheduled this retry: schedule it again (`Claim::Retrying`).
    ReplayRetry,
    /// The retry of an attempt that a receipt proved arrived: settle it accepted, no call.
    Received,
    /// The process stopped during this very call (`Claim::InFlight` of this attempt): ask the
    /// provider whether it arrived.
    AskProvider,
    /// A stale duplicate: a later attempt has the message.
    Skip,
}

/// The plan for attempt `n` of a message from its stored claim; `received`: a receipt shows
/// the provider got an earlier attempt. Pure, so the protocol model checks this very rule.
pub fn plan_step(claim: Option<&Claim>, n: u32, redrive: bool, received: bool) -> PlanStep {
    match claim {
        None => PlanStep::Send,
        Some(claim) if redrive && is_redrivable(claim, n) => PlanStep::Send,
        Some(Claim::Done { .. }) => PlanStep::ReplayDone,
        Some(Claim::Retrying { attempt, .. }) if *attempt == n => PlanStep::ReplayRetry,
        Some(Claim::Retrying { attempt, .. }) if *attempt > n => PlanStep::Skip,
        Some(Claim::Retrying { .. }) if received => PlanStep::Received,
        Some(Claim::Retrying { .. }) => PlanStep::Send,
        Some(Claim::InFlight { attempt, .. }) if *attempt == n => PlanStep::AskProvider,
        Some(Claim::InFlight { attempt, .. }) if *attempt > n => PlanStep::Skip,
        Some(Claim::InFlight { .. }) => PlanStep::Send,
    }
}

/// A failed attempt `n - 1` an operator may send again.
fn is_redrivable(claim: &Claim, n: u32) -> bool {
    matches!(claim, Claim::Done { attempt, outcome: OutcomeKind::Failed { .. } | OutcomeKind::DeadLettered { .. }, .. } if attempt + 1 == n)
}

/// Messages about to be sent again after a failed attempt whose log row shows the provider got
/// that attempt after all (a timeout after the request went out, then a receipt): their
/// provider message ids.
async fn received_earlier(
    caller: &Caller<'_>,
    messages: &[RenderedMessage],
    claims: &[Option<Claim>],
) -> crate::Result<HashMap<MessageId, String>> {
    let resending: Vec<MessageKey> = messages
        .iter()
        .zip(claims)
        .filter(|(m, c)| matches!(c, Some(Claim::Retrying { attempt, .. }) if *attempt <= m.attempt))
        .map(|(m, _)| m.key)
        .collect();
    let mut received = HashMap::new();
    if resending.is_empty() {
        return Ok(received);
    }
    for (key, row) in resending.iter().zip(caller.deliver.log.get_messages(&resending).await?) {
        let Some(row) = row else { continue };
        if matches!(row.status, MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read) {
            if let Some(id) = row.provider_message_id {
                received.insert(key.id, id);
            }
        }
    }
    Ok(received)
}

/// A call that was in flight when its process stopped: ask the provider whether it arrived.
async fn lost_call(
    caller: &Caller<'_>,
    message: RenderedMessage,
    expected: Claim,
    settle: &mut Settlement,
) -> Option<Sendable> {
    let n = message.attempt + 1;
    let sender = caller.route.senders.first().map(|s| s.id.as_str()).unwrap_or_default();
    match caller.route.provider.lookup(sender, &message).await {
        Lookup::NotReceived => Some(Sendable::read(message, Some(expected))),
        Lookup::Accepted { provider_message_id } => {
            let kind = OutcomeKind::Accepted { provider: settle.provider().to_string(), provider_message_id };
            settle.done(&message, n, kind, None, Some(expected));
            None
        }
        Lookup::Unknown => {
            // Like a call that timed out after it was sent: wait for a receipt proving it
            // arrived (then it is accepted, not re-sent), and send again only without one.
            let due = now_ms() + caller.deliver.config.receipt_grace.as_millis() as u64;
            tracing::warn!(message = %message.key.id, "call in doubt: in flight when the process stopped; waiting for its receipt");
            settle.retry(message, n, due, Some(expected));
            None
        }
    }
}
