//! deliver: messages.ready (and delivery.retry) → provider calls → delivery.outcomes,
//! delivery.retry, delivery.dlq, receipts.inbound.
//!
//! **No duplicate sends.** Each message is claimed right before its own call: a
//! compare-and-set in the shared state from the claim it was planned from to
//! `InFlight { attempt }` ([`call`]). A replayed message (crash, duplicate record, restart)
//! finds its claim and is planned from it ([`plan`]): `Done` re-emits everything the call
//! produced — outcome, dead letter, synthetic receipt — without calling; `Retrying` re-emits its
//! retry at the recorded due time; `InFlight` for the same attempt means the process died
//! mid-call, so the provider is asked (`Provider::lookup`) — sent again at once only if it says
//! it never received it; if it cannot say (most real APIs), the message is treated like a call
//! that timed out after it was sent: it waits `receipt_grace` for a receipt proving it arrived
//! and is sent again only without one. Only calls really in flight at a crash (at most
//! `concurrency` per lane) are in doubt this way.
//!
//! **Pacing** per sender at call time ([`pacing`]; routes per tenant and channel in
//! [`senders`]). **Classification** of the provider's answer ([`judge`]):
//! - accepted → outcome;
//! - retry (5xx, timeouts) → `delivery.retry`, due after exponential backoff + jitter, at most
//!   `max_attempts` and `max_age`, then dead-lettered with the last error;
//! - pace / slow down → the sender's rate drops (AIMD) and the message retries; recipient
//!   back-off → only that message waits (~4^n s); these are not the message's fault, so they
//!   may take `4 × max_attempts`;
//! - stop sender → the sender takes no more calls in any worker (alert); the message retries
//!   on another live sender of the route, or fails when none is left;
//! - retry later (WhatsApp 131049) → failed, in the DLQ, not redrivable before the time;
//! - permanent → failed with the reason, also kept in the DLQ for inspection and redrive.
//!
//! A paused campaign's messages are handed back to the runner untouched (no claim, no pacing
//! slot); a cancelled campaign's unsent messages become `cancelled` outcomes. Retries and DLQ
//! redrives arrive on `delivery.retry` and go through the same steps ([`Redeliver`]); a redrive
//! may send a message whose claim says it failed. Nothing is dropped silently.
//!
//! # Layout
//! [`plan`] (claims → what to do), [`call`] (slots, claims, calls), [`judge`] (answers),
//! [`settle`] (claims, then records), [`redeliver`], [`pacing`], [`senders`], [`provider`], [`providers`]
//! (one module per provider), [`simulator`].
//!
//! It is not: the throttle (who goes next) nor reconcile (what the log says).

pub mod call;
pub mod judge;
pub mod pacing;
pub mod plan;
pub mod provider;
pub mod providers;
pub mod redeliver;
pub mod senders;
pub mod settle;
pub mod simulator;

pub use judge::retry_wait;
pub use redeliver::Redeliver;

use crate::control::CampaignControl;
use call::Caller;
use pipeline::{topics, Emitter, Input, Lane, Stage, StageError, Step};
use schemas::*;
use senders::Senders;
use settle::Settlement;
use std::result::Result;
use std::sync::Arc;
use std::time::Duration;
use storage::{Fence, MessageLog, SharedState};

#[derive(Debug, Clone)]
pub struct DeliverConfig {
    /// Provider calls in flight per step (one lane: a campaign).
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
    /// A step sleeps for its next pacing slot only if it comes this soon; otherwise it hands
    /// the rest of its batch back to the runner until then.
    pub max_pace_wait: Duration,
    /// A step stops taking new slots after this long (its lane goes to the back of the line).
    pub step_budget: Duration,
    /// A paced call leaves this long after its slot was granted (longer than a claim write
    /// takes), so calls reach the provider spaced as the bucket granted them.
    pub pace_delay: Duration,
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
            max_pace_wait: Duration::from_millis(50),
            step_budget: Duration::from_secs(1),
            pace_delay: Duration::from_millis(25),
        }
    }
}

/// The deliver stage (consumes `messages.ready`); [`Redeliver`] shares it for `delivery.retry`.
pub struct Deliver {
    log: Arc<dyn MessageLog>,
    state: Arc<dyn SharedState>,
    senders: Arc<Senders>,
    control: Arc<CampaignControl>,
    config: DeliverConfig,
}

impl Deliver {
    pub fn new(
        log: Arc<dyn MessageLog>,
        state: Arc<dyn SharedState>,
        senders: Arc<Senders>,
        control: Arc<CampaignControl>,
        config: DeliverConfig,
    ) -> Self {
        Self { log, state, senders, control, config }
    }

    pub fn senders(&self) -> &Arc<Senders> {
        &self.senders
    }

    /// Delivers one record's messages; `Some((rest, until))` when the step stopped early.
    /// Claims are written under `lease` when the partition is held by one (distributed
    /// workers): after a takeover this worker's claim writes are refused, so it never calls.
    pub(crate) async fn deliver(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        redrive: bool,
        messages: Vec<RenderedMessage>,
        lease: Option<&pipeline::PartitionLease>,
        out: &mut Emitter,
    ) -> crate::Result<Option<(Vec<RenderedMessage>, u64)>> {
        let fence = lease.map(|l| Fence { lease: l.name.clone(), token: l.token });
        let Some(channel) = messages.first().map(|m| m.content.channel()) else { return Ok(None) };
        let route = self.senders.route(tenant, channel).await?;
        let mut settle = Settlement::new(tenant, campaign, route.provider.name(), route.provider.sends_receipts());
        let quota = route.quota.is_some();
        let caller = Caller { deliver: self, route, tenant, campaign, redrive, fence };
        let stop = match caller.run(messages, &mut settle).await {
            Err(crate::Error::Storage(fenced @ storage::Error::Fenced { .. })) => {
                // This worker lost the partition mid-step: its calls' outcomes still go out
                // (see `Settlement::emit_facts`), nothing else does.
                settle.emit_facts(out)?;
                out.flush().await?;
                return Err(fenced.into());
            }
            other => other?,
        };
        if quota && settle.fresh_accepts > 0 {
            // Messaging-tier counts move from release time to call time (see `crate::throttle::quota`).
            self.state.restamp_quota(tenant, settle.fresh_accepts, now_ms()).await?;
        }
        settle.emit(out)?;
        Ok(stop.map(|s| (s.rest, s.until_ms)))
    }
}

impl Stage for Deliver {
    type In = MessageBatch;

    fn name(&self) -> &'static str {
        topics::DELIVER.name
    }

    fn lane(&self, batch: &MessageBatch) -> Lane {
        Lane::campaign(batch.tenant, batch.campaign)
    }

    fn lane_of_encoded(&self, bytes: &[u8]) -> Option<Lane> {
        schemas::campaign_of_encoded(bytes).map(|(tenant, campaign)| Lane::campaign(tenant, campaign))
    }

    fn metrics(&self) -> Vec<pipeline::Sample> {
        self.senders.samples()
    }

    async fn process(
        &self,
        batch: Vec<Input<MessageBatch>>,
        out: &mut Emitter,
    ) -> Result<Step<MessageBatch>, StageError> {
        for (i, input) in batch.into_iter().enumerate() {
            let MessageBatch { tenant, campaign, messages } = input.value;
            let lease = input.lease.as_deref();
            if let Some((messages, until_ms)) = self.deliver(tenant, campaign, false, messages, lease, out).await? {
                let replacement = Some(MessageBatch { tenant, campaign, messages });
                return Ok(Step::Wait { from: i, replacement, until_ms });
            }
        }
        Ok(Step::Done)
    }
}

#[cfg(test)]
mod tests;
