//! One deliver step: plan, claim and call a batch's messages, slot by slot.
//!
//! The loop takes call slots from the route ([`super::pacing::Route::slots`]), reads the claims
//! of just as many messages ([`super::plan`]), claims each message right before its own call
//! (compare-and-set to `InFlight`) and keeps up to `concurrency` calls in flight. Answers are
//! settled in waves as they arrive ([`super::settle`]). So at any moment only messages whose
//! call is really in flight hold an `InFlight` claim: a crash leaves at most `concurrency`
//! messages whose fate must be asked of the provider, never a whole batch.
//!
//! The step ends — its in-flight calls finished and settled — when the batch is done, or with
//! the rest of the batch handed back to the runner ([`Stop`]) when the campaign is paused (no
//! claim is taken, no pacing slot used), when the next slot is further away than
//! `max_pace_wait`, or after `step_budget` (so lanes take turns). Short pacing waits (a few ms
//! between slots of a fast sender) are slept here, with calls still in flight.
//!
//! It is not: the classifier of answers ([`super::judge`]).

use super::judge::{self, Verdict};
use super::pacing::{Route, Sender};
use super::plan::{self, Sendable};
use super::provider::SendResult;
use super::settle::Settlement;
use super::Deliver;
use futures::stream::{FuturesUnordered, StreamExt};
use schemas::*;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{CampaignStatus, Claim, ClaimWrite};

/// Answers settled together (claims written in one call).
const SETTLE_WAVE: usize = 256;
/// How often a paused campaign is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// The rest of a batch the step handed back, and when to go on.
pub(super) struct Stop {
    pub rest: Vec<RenderedMessage>,
    pub until_ms: u64,
}

/// What one step works with.
pub(super) struct Caller<'a> {
    pub deliver: &'a Deliver,
    pub route: Arc<Route>,
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub redrive: bool,
    /// The partition lease claim writes are fenced by (distributed workers).
    pub fence: Option<storage::state::Fence>,
}

/// A finished call.
struct Called {
    sender: Arc<Sender>,
    message: RenderedMessage,
    claim: Claim,
    result: SendResult,
    /// This answer stopped the sender.
    stopped: bool,
}

type CallFuture = Pin<Box<dyn Future<Output = Called> + Send>>;

impl Run {
    /// Takes the messages not yet called, in order.
    fn take_rest(&mut self) -> Vec<RenderedMessage> {
        let ready = self.ready.drain(..).map(|s| s.message);
        self.reread.drain(..).chain(ready).chain(self.queue.drain(..)).collect()
    }
}

/// The step's moving parts.
struct Run {
    queue: VecDeque<RenderedMessage>,
    /// First attempts whose unread compare-and-set found a claim: planned again from a read.
    reread: Vec<RenderedMessage>,
    ready: VecDeque<Sendable>,
    calls: FuturesUnordered<CallFuture>,
    finished: Vec<Called>,
    stop_at: Option<u64>,
}

impl Caller<'_> {
    /// Delivers `messages` (all of this caller's tenant and campaign) into `settle`; `Some`
    /// when the step stopped early with messages left.
    pub async fn run(&self, messages: Vec<RenderedMessage>, settle: &mut Settlement) -> crate::Result<Option<Stop>> {
        let mut run = Run {
            queue: messages.into(),
            reread: Vec::new(),
            ready: VecDeque::new(),
            calls: FuturesUnordered::new(),
            finished: Vec::new(),
            stop_at: None,
        };
        let started = Instant::now();
        let result = loop {
            match self.turn(&mut run, settle, started).await {
                Ok(true) => continue,
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        // Whatever happened, calls in flight finish and are written down: dropping one would
        // leave its claim `InFlight` and its message in doubt.
        while let Some(called) = run.calls.next().await {
            run.finished.push(called);
        }
        self.settle_calls(&mut run.finished, settle).await?;
        result?;
        Ok(run.stop_at.map(|until_ms| Stop { rest: run.take_rest(), until_ms }))
    }

    /// One turn of the loop; `false` when the step is over.
    async fn turn(&self, run: &mut Run, settle: &mut Settlement, started: Instant) -> crate::Result<bool> {
        let config = &self.deliver.config;
        if run.finished.len() >= SETTLE_WAVE || (!run.finished.is_empty() && run.calls.is_empty()) {
            self.settle_calls(&mut run.finished, settle).await?;
        }
        let pending = run.queue.len() + run.ready.len() + run.reread.len();
        if pending == 0 || run.stop_at.is_some() {
            return Ok(match run.calls.next().await {
                Some(called) => {
                    run.finished.push(called);
                    true
                }
                None => false,
            });
        }
        let concurrency = config.concurrency.max(1);
        let free = concurrency - run.calls.len().min(concurrency);
        // Unpaced calls go in groups of `concurrency` (one claim write and one settle write per
        // group: measured, groups of concurrency/4 cost ~5% of end-to-end throughput); paced
        // ones as slots come. Either way at most `concurrency` claims are `InFlight`.
        let group = if self.route.is_paced() { 1 } else { concurrency };
        if free < group.min(pending) {
            run.finished.extend(run.calls.next().await);
            return Ok(true);
        }
        if started.elapsed() >= config.step_budget {
            run.stop_at = Some(now_ms());
            return Ok(true);
        }
        match self.deliver.control.status(self.tenant, self.campaign).await? {
            CampaignStatus::Paused => {
                run.stop_at = Some(now_ms() + RECHECK.as_millis() as u64);
                return Ok(true);
            }
            CampaignStatus::Cancelled => {
                for m in run.take_rest() {
                    settle.cancelled(&m);
                }
                return Ok(true);
            }
            _ => {}
        }
        // Read the claims of the next messages right before their slots.
        if !run.reread.is_empty() {
            let batch = std::mem::take(&mut run.reread);
            run.ready.extend(plan::plan(self, batch, self.redrive, true, settle).await?);
        }
        if run.ready.len() < free && !run.queue.is_empty() {
            let take = (free - run.ready.len()).min(run.queue.len());
            let batch: Vec<RenderedMessage> = run.queue.drain(..take).collect();
            run.ready.extend(plan::plan(self, batch, self.redrive, false, settle).await?);
            if run.ready.is_empty() {
                return Ok(true);
            }
        }
        let want = free.min(run.ready.len()) as u32;
        let slots = self.route.slots(self.deliver.state.as_ref(), want).await?;
        if slots.no_sender {
            let (kind, letter) = judge::no_sender();
            for Sendable { message: m, expected, .. } in run.ready.drain(..) {
                settle.done(&m, m.attempt + 1, kind.clone(), Some(letter.clone()), expected);
            }
            return Ok(true);
        }
        if slots.grants.is_empty() {
            if slots.wait > config.max_pace_wait {
                run.stop_at = Some(now_ms() + slots.wait.as_millis() as u64);
                return Ok(true);
            }
            // A short wait: sleep, collecting answers meanwhile.
            let sleep = tokio::time::sleep(slots.wait.max(Duration::from_micros(200)));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(called) = run.calls.next(), if !run.calls.is_empty() => run.finished.push(called),
                }
            }
            return Ok(true);
        }
        // Paced calls leave a fixed delay after their slot, whatever the claim write took: the
        // provider sees the bucket's spacing, not the write's jitter.
        let leave_at = self.route.is_paced().then(|| tokio::time::Instant::now() + config.pace_delay);
        self.claim_and_call(run, slots.grants, leave_at).await?;
        Ok(true)
    }

    /// Claims one message per granted slot (compare-and-set against its planned claim) and
    /// starts its call; a message someone else claimed meanwhile gives its slot back.
    async fn claim_and_call(
        &self,
        run: &mut Run,
        grants: Vec<(Arc<Sender>, u32)>,
        leave_at: Option<tokio::time::Instant>,
    ) -> crate::Result<()> {
        let mut assigned = Vec::new();
        for (sender, n) in grants {
            for _ in 0..n {
                match run.ready.pop_front() {
                    Some(sendable) => assigned.push((sender.clone(), sendable)),
                    None => break,
                }
            }
        }
        let now = now_ms();
        let writes: Vec<ClaimWrite> = assigned
            .iter()
            .map(|(_, s)| ClaimWrite {
                key: s.message.key,
                expected: s.expected.clone(),
                claim: Claim::InFlight { attempt: s.message.attempt + 1, at_ms: now },
            })
            .collect();
        let written = self.deliver.state.put_claims(&writes, self.fence.as_ref()).await?;
        for ((sender, sendable), (ok, write)) in assigned.into_iter().zip(written.into_iter().zip(writes)) {
            let message = sendable.message;
            if !ok {
                self.route.refund(self.deliver.state.as_ref(), &sender, 1).await?;
                if sendable.read {
                    tracing::debug!(message = %message.key.id, "claimed elsewhere meanwhile; not called here");
                } else {
                    // Claimed before (a replay): what to do depends on that claim.
                    run.reread.push(message);
                }
                continue;
            }
            let route = self.route.clone();
            let tenant = self.tenant;
            run.calls.push(Box::pin(async move {
                if let Some(at) = leave_at {
                    tokio::time::sleep_until(at).await;
                }
                let result = route.provider.send(&sender.id, &message).await;
                // The sender adapts right when the answer arrives, so the slots still to come
                // already go at the new pace or elsewhere.
                let stopped = match &result {
                    SendResult::Failed(e) => judge::adapt(&sender, tenant, e),
                    SendResult::Accepted { .. } => false,
                };
                Called { sender, message, claim: write.claim, result, stopped }
            }));
        }
        Ok(())
    }

    /// Judges finished calls and writes every claim decided so far.
    async fn settle_calls(&self, finished: &mut Vec<Called>, settle: &mut Settlement) -> crate::Result<()> {
        let config = &self.deliver.config;
        for Called { sender, message, claim, result, stopped } in finished.drain(..) {
            let attempt = message.attempt + 1;
            match result {
                SendResult::Accepted { provider_message_id } => {
                    settle.fresh_accepts += 1;
                    let kind = OutcomeKind::Accepted { provider: settle.provider().to_string(), provider_message_id };
                    settle.done(&message, attempt, kind, None, Some(claim));
                }
                SendResult::Failed(e) => {
                    tracing::debug!(message = %message.key.id, attempt, code = %e.code, "provider refused");
                    if stopped {
                        judge::record_stop(self.deliver.state.as_ref(), self.tenant, settle.provider(), &sender.id)
                            .await;
                    }
                    match judge::judge(config, &self.route, &sender, &message, attempt, &e) {
                        Verdict::Retry(wait) => {
                            let due = now_ms() + wait.as_millis() as u64;
                            settle.retry(message, attempt, due, Some(claim));
                        }
                        Verdict::Outcome { kind, letter } => settle.done(&message, attempt, kind, letter, Some(claim)),
                    }
                }
            }
        }
        settle.write_claims(self.deliver.state.as_ref(), self.fence.as_ref()).await?;
        Ok(())
    }
}
