//! What one deliver step decided, written down in order: claims first (the shared state is the
//! record of what was called), then the records they imply — outcomes, retries (due at their
//! backoff), dead letters and, for providers without receipts, the delivered receipt.
//!
//! Replays use the same builder without writing claims: a `Done` claim re-emits everything its
//! call produced (outcome, letter, receipt), a `Retrying` claim re-emits its retry at the due
//! time it recorded. Every record is idempotent downstream, so emitting one twice is harmless;
//! losing one is not.

use pipeline::{topics, Emitter};
use schemas::*;
use storage::{Claim, ClaimWrite, Fence, LetterInfo, SharedState};

pub(super) struct Settlement {
    tenant: TenantId,
    campaign: CampaignId,
    provider: String,
    sends_receipts: bool,
    claims: Vec<ClaimWrite>,
    events: Vec<OutcomeEvent>,
    letters: Vec<DeadLetter>,
    receipts: Vec<Receipt>,
    retries: Vec<RenderedMessage>,
    retry_due_ms: u64,
    /// Acceptances by the provider in this step (fresh calls, not replays).
    pub fresh_accepts: u64,
}

impl Settlement {
    pub fn new(tenant: TenantId, campaign: CampaignId, provider: &str, sends_receipts: bool) -> Self {
        Self {
            tenant,
            campaign,
            provider: provider.to_string(),
            sends_receipts,
            claims: Vec::new(),
            events: Vec::new(),
            letters: Vec::new(),
            receipts: Vec::new(),
            retries: Vec::new(),
            retry_due_ms: 0,
            fresh_accepts: 0,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Settles attempt `attempt` of `message` for good (claim `Done`, replacing `expected`).
    pub fn done(
        &mut self,
        message: &RenderedMessage,
        attempt: u32,
        kind: OutcomeKind,
        letter: Option<LetterInfo>,
        expected: Option<Claim>,
    ) {
        let receipt = self.wants_receipt(&kind);
        self.claims.push(ClaimWrite {
            key: message.key,
            expected,
            claim: Claim::Done { attempt, outcome: kind.clone(), letter: letter.clone(), receipt },
        });
        self.replay_done(message, attempt, kind, letter, receipt);
    }

    /// Re-emits what a `Done` claim recorded.
    pub fn replay_done(
        &mut self,
        message: &RenderedMessage,
        attempt: u32,
        kind: OutcomeKind,
        letter: Option<LetterInfo>,
        receipt: bool,
    ) {
        let now = now_ms();
        if let (true, OutcomeKind::Accepted { provider, provider_message_id }) = (receipt, &kind) {
            self.receipts.push(Receipt {
                provider: provider.clone(),
                provider_message_id: provider_message_id.clone(),
                key: Some(message.key),
                status: ReceiptStatus::Delivered,
                at_ms: now,
                error: None,
            });
        }
        if let Some(LetterInfo { reason, not_before_ms }) = letter {
            self.letters.push(DeadLetter {
                message: message.clone(),
                reason,
                attempts: attempt,
                at_ms: now,
                not_before_ms,
            });
        }
        self.events.push(OutcomeEvent::Message(outcome_of(message, kind, attempt)));
    }

    /// Attempt `attempt` failed transiently: the next is due at `due_ms`.
    pub fn retry(&mut self, message: RenderedMessage, attempt: u32, due_ms: u64, expected: Option<Claim>) {
        self.claims.push(ClaimWrite { key: message.key, expected, claim: Claim::Retrying { attempt, due_ms } });
        self.replay_retry(message, attempt, due_ms);
    }

    /// Re-emits the retry a `Retrying` claim recorded.
    pub fn replay_retry(&mut self, mut message: RenderedMessage, attempt: u32, due_ms: u64) {
        message.attempt = attempt;
        self.retry_due_ms = self.retry_due_ms.max(due_ms);
        self.retries.push(message);
    }

    /// The campaign was cancelled before this message's call: nothing was sent.
    pub fn cancelled(&mut self, message: &RenderedMessage) {
        self.events.push(OutcomeEvent::Message(outcome_of(message, OutcomeKind::Cancelled, message.attempt)));
    }

    fn wants_receipt(&self, kind: &OutcomeKind) -> bool {
        !self.sends_receipts && matches!(kind, OutcomeKind::Accepted { .. })
    }

    /// Writes the claims decided so far (durable when it returns). Claims someone else moved
    /// on meanwhile are left as they are; their records are still emitted (idempotent).
    pub async fn write_claims(&mut self, state: &dyn SharedState, fence: Option<&Fence>) -> storage::Result<()> {
        if self.claims.is_empty() {
            return Ok(());
        }
        let written = state.put_claims(&self.claims, fence).await?;
        let moved = written.iter().filter(|w| !**w).count();
        if moved > 0 {
            tracing::warn!(tenant = %self.tenant, campaign = %self.campaign, moved, "claims changed by another worker while settling");
        }
        self.claims.clear();
        Ok(())
    }

    /// Queues only the outcomes: facts about calls made, true whoever owns the partition now.
    /// For a worker whose lease was taken while it settled (its claim writes are refused): the
    /// new owner finds those calls in doubt and waits the receipt grace, and these outcomes
    /// (and the receipts reconcile can match through them) show it the provider got them.
    pub fn emit_facts(self, out: &mut Emitter) -> pipeline::Result<()> {
        if !self.events.is_empty() {
            out.emit(&topics::OUTCOMES, &OutcomeBatch { tenant: self.tenant, events: self.events })?;
        }
        Ok(())
    }

    /// Queues every record decided (claims must have been written).
    pub fn emit(self, out: &mut Emitter) -> pipeline::Result<()> {
        let tenant = self.tenant;
        debug_assert!(self.claims.is_empty(), "claims are written before their records");
        if !self.events.is_empty() {
            out.emit(&topics::OUTCOMES, &OutcomeBatch { tenant, events: self.events })?;
        }
        if !self.retries.is_empty() {
            let batch = RetryBatch { tenant, campaign: self.campaign, redrive: false, messages: self.retries };
            out.emit_due(&topics::RETRY, &batch, self.retry_due_ms)?;
        }
        if !self.letters.is_empty() {
            out.emit(&topics::DLQ, &DeadLetterBatch { tenant, letters: self.letters })?;
        }
        if !self.receipts.is_empty() {
            out.emit(&topics::RECEIPTS, &ReceiptBatch { tenant, receipts: self.receipts })?;
        }
        Ok(())
    }
}

pub(super) fn outcome_of(message: &RenderedMessage, kind: OutcomeKind, attempts: u32) -> Outcome {
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
