//! The send protocol, model-checked exhaustively (stateright, breadth first): deliver workers
//! taking one partition by lease, claiming each message by compare-and-set fenced with the
//! lease's token, calling the provider, settling, and reconcile folding outcomes and receipts
//! into the message log and the campaign counters.
//!
//! The model calls the real decision functions, not copies: `storage::state::lease_step`,
//! `fence_admits` and `claim_applies` (what both shared-state backends apply),
//! `stages::deliver::plan::plan_step` (what deliver does with a claim it reads) and
//! `stages::reconcile::apply_event` (how reconcile merges an event into a row). What it adds is
//! the environment: a clock, lease expiry, crashes, workers paused at any step (a paused worker
//! simply takes no action while others and the clock move on), transient failures, calls the
//! provider accepted whose answer was lost, receipts arriving late, replays from the committed
//! offset.
//!
//! Assumptions (each is a property of the code or the deployment, named where it lives):
//! - A worker calls the provider only while its lease is valid by its own clock (deliver's
//!   pre-call lease check), and a call is accepted or not at that moment (calls time out well
//!   within the lease's margin).
//! - A receipt arrives within `RECEIPT_DELAY` of the acceptance, less than the receipt grace,
//!   and matches its message through the callback data the call carried.
//! - Clocks agree (lease expiry compares one worker's clock with another's).
//!
//! Properties: the provider never accepts a message twice; once workers stop failing every
//! message ends delivered, with its claim settled; counters always equal the rows they count.

use schemas::*;
use stages::deliver::plan::{plan_step, PlanStep};
use stages::reconcile::{apply_event, MessageEvent};
use stateright::{Checker, Model, Property};
use storage::state::{claim_applies, fence_admits, lease_step, ClaimWrite, Fence, Lease, LeaseStep};
use storage::{CampaignCounters, Claim, MessageRecord, MessageStatus};

const WORKERS: usize = 2;
const MESSAGES: usize = 2;
const LEASE_TTL: u64 = 3;
const RECEIPT_DELAY: u64 = 1;
const RECEIPT_GRACE: u64 = 2;
/// After `Faults::until` workers stop failing: they act promptly and time passes only when
/// nobody can act, until this bound (far beyond every due time the faults can create).
const END_TIME: u64 = 30;

/// How much can go wrong in one run (the budgets keep the state space finite).
#[derive(Clone, Copy)]
struct Faults {
    crashes: u8,
    /// Calls refused before the provider got them (retried after 1 tick).
    failures: u8,
    /// Calls the provider accepted whose answer was lost (retried after the receipt grace).
    doubts: u8,
    /// Until then, anything goes (faults, pauses: time passes whatever workers are doing).
    until: u64,
}

struct SendProtocol {
    faults: Faults,
}

/// A record of the partition: message `msg`, previous attempts `attempt`, due at `due`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Record {
    msg: usize,
    attempt: u32,
    due: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    Plan,
    Claim { expected: Option<Claim> },
    Call { claimed: Claim },
    Settle { claimed: Claim, accepted: bool, retry_in: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Worker {
    Idle,
    Active { token: u64, believed_expiry: u64, pos: usize, step: Step },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Sys {
    now: u64,
    /// The lease as Redis stores it: (holder, token, expires).
    lease: Option<(String, u64, u64)>,
    lease_seq: u64,
    claims: Vec<Option<Claim>>,
    log: Vec<Record>,
    committed: usize,
    rows: Vec<Option<MessageRecord>>,
    counters: CampaignCounters,
    /// Acceptances by the provider, per message.
    accepted: Vec<u8>,
    /// Receipts on their way: (message, latest arrival).
    receipts: Vec<(usize, u64)>,
    workers: Vec<Worker>,
    /// Incarnation per worker (a restarted process is a new lease holder).
    incarnation: Vec<u8>,
    crashes: u8,
    failures: u8,
    doubts: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Tick,
    Acquire(usize),
    Renew(usize),
    Crash(usize),
    Work(usize),
    /// The call's three fates: accepted, refused before arriving, accepted but answer lost.
    Call(usize, Fate),
    Receipt(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fate {
    Accepted,
    Refused,
    Lost,
}

fn key(msg: usize) -> MessageKey {
    let (tenant, campaign) = (TenantId(1), CampaignId(1));
    MessageKey {
        tenant,
        campaign,
        bucket: 0,
        id: MessageId::derive(tenant, campaign, RecipientId(msg as u64), Channel::WhatsApp),
    }
}

fn holder(s: &Sys, w: usize) -> String {
    format!("w{w}.{}", s.incarnation[w])
}

fn stored_lease(s: &Sys) -> Option<Lease> {
    s.lease.as_ref().map(|(holder, token, expires)| Lease {
        name: "deliver/0".into(),
        holder: holder.clone(),
        token: *token,
        expires_ms: *expires,
    })
}

/// Reconcile folding one event into a row and the counters (as `stages::reconcile` does).
fn reconcile(s: &mut Sys, msg: usize, status: MessageStatus, attempts: u32) {
    let event = MessageEvent {
        status,
        at_ms: s.now,
        recipient: Some(RecipientId(msg as u64)),
        address: Some(format!("+1555000{msg}")),
        attempts,
        trigger_ms: 1,
        provider_message_id: Some(("whatsapp".into(), format!("wamid.{msg}"))),
        error: None,
    };
    let applied = apply_event(&mut s.rows[msg], &event);
    if let Some(previous) = applied.transition {
        if let Some(slot) = previous.and_then(|p| s.counters.slot(p)) {
            *slot -= 1;
        }
        if let Some(slot) = s.counters.slot(status) {
            *slot += 1;
        }
    }
}

/// A fenced claim write by worker `w`'s lease `token`; `None` when fenced.
fn put_claim(s: &mut Sys, token: u64, msg: usize, expected: Option<Claim>, claim: Claim) -> Option<bool> {
    let fence = Fence { lease: "deliver/0".into(), token };
    if !fence_admits(s.lease.as_ref().map(|l| l.1), &fence) {
        return None;
    }
    let write = ClaimWrite { key: key(msg), expected, claim: claim.clone() };
    let applies = claim_applies(s.claims[msg].as_ref(), &write);
    if applies {
        s.claims[msg] = Some(claim);
    }
    Some(applies)
}

/// Whether the row shows the provider got the message (deliver's `received_earlier`).
fn received(s: &Sys, msg: usize) -> bool {
    s.rows[msg].as_ref().is_some_and(|r| {
        matches!(r.status, MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read)
            && r.provider_message_id.is_some()
    })
}

impl SendProtocol {
    /// One step of worker `w` on its current record; `None` when it cannot act now.
    fn work(&self, s: &mut Sys, w: usize) -> Option<()> {
        let Worker::Active { token, believed_expiry, pos, step } = s.workers[w].clone() else { return None };
        let record = s.log.get(pos)?.clone();
        let (msg, n) = (record.msg, record.attempt + 1);
        let advance = |s: &mut Sys, step: Step| {
            s.workers[w] = Worker::Active { token, believed_expiry, pos: pos + 1, step };
            // The runner commits past a record once its step is done (unfenced, as Fluvio's
            // offsets are): a late commit may move the offset back, which only replays.
            s.committed = pos + 1;
        };
        match step {
            Step::Plan => {
                if record.due > s.now {
                    return None;
                }
                match plan_step(s.claims[msg].as_ref(), n, false, received(s, msg)) {
                    PlanStep::Send => {
                        let expected = s.claims[msg].clone();
                        s.workers[w] = Worker::Active { token, believed_expiry, pos, step: Step::Claim { expected } };
                    }
                    PlanStep::ReplayDone => {
                        if let Some(Claim::Done { attempt, .. }) = s.claims[msg] {
                            reconcile(s, msg, MessageStatus::Sent, attempt);
                        }
                        advance(s, Step::Plan);
                    }
                    PlanStep::ReplayRetry => {
                        if let Some(Claim::Retrying { attempt, due_ms }) = s.claims[msg] {
                            s.log.push(Record { msg, attempt, due: due_ms });
                        }
                        advance(s, Step::Plan);
                    }
                    PlanStep::Received => {
                        let expected = s.claims[msg].clone();
                        let done = Claim::Done { attempt: n - 1, outcome: accepted(msg), letter: None, receipt: false };
                        match put_claim(s, token, msg, expected, done) {
                            None => s.workers[w] = Worker::Idle,
                            Some(_) => {
                                reconcile(s, msg, MessageStatus::Sent, n - 1);
                                advance(s, Step::Plan);
                            }
                        }
                    }
                    PlanStep::AskProvider => {
                        // The provider cannot say (the worst case): retry after the grace.
                        let expected = s.claims[msg].clone();
                        let due_ms = s.now + RECEIPT_GRACE;
                        match put_claim(s, token, msg, expected, Claim::Retrying { attempt: n, due_ms }) {
                            None => s.workers[w] = Worker::Idle,
                            Some(_) => {
                                s.log.push(Record { msg, attempt: n, due: due_ms });
                                advance(s, Step::Plan);
                            }
                        }
                    }
                    PlanStep::Skip => advance(s, Step::Plan),
                }
            }
            Step::Claim { expected } => {
                let claim = Claim::InFlight { attempt: n, at_ms: s.now };
                match put_claim(s, token, msg, expected, claim) {
                    None => s.workers[w] = Worker::Idle,
                    Some(true) => {
                        let step = Step::Call { claimed: Claim::InFlight { attempt: n, at_ms: s.now } };
                        s.workers[w] = Worker::Active { token, believed_expiry, pos, step };
                    }
                    Some(false) => s.workers[w] = Worker::Active { token, believed_expiry, pos, step: Step::Plan },
                }
            }
            Step::Call { .. } => {
                // The pre-call lease check: a worker whose lease ran out stops instead.
                if s.now >= believed_expiry {
                    s.workers[w] = Worker::Idle;
                } else {
                    return None; // calls happen through `Action::Call`
                }
            }
            Step::Settle { claimed, accepted: ok, retry_in } => {
                let attempt = n;
                let expected = Some(claimed);
                let settled = if ok {
                    Claim::Done { attempt, outcome: accepted(msg), letter: None, receipt: false }
                } else {
                    Claim::Retrying { attempt, due_ms: s.now + retry_in }
                };
                match put_claim(s, token, msg, expected, settled) {
                    None => {
                        // Fenced: only the facts go out (`Settlement::emit_facts`).
                        if ok {
                            reconcile(s, msg, MessageStatus::Sent, attempt);
                        }
                        s.workers[w] = Worker::Idle;
                    }
                    Some(_) => {
                        if ok {
                            reconcile(s, msg, MessageStatus::Sent, attempt);
                        } else {
                            s.log.push(Record { msg, attempt, due: s.now + retry_in });
                        }
                        advance(s, Step::Plan);
                    }
                }
            }
        }
        Some(())
    }
}

fn accepted(msg: usize) -> OutcomeKind {
    OutcomeKind::Accepted { provider: "whatsapp".into(), provider_message_id: format!("wamid.{msg}") }
}

impl SendProtocol {
    /// Every action but the clock's (`calm`: no faults).
    fn moves(&self, s: &Sys, calm: bool, actions: &mut Vec<Action>) {
        for (i, _) in s.receipts.iter().enumerate() {
            actions.push(Action::Receipt(i));
        }
        for w in 0..WORKERS {
            match &s.workers[w] {
                Worker::Idle => actions.push(Action::Acquire(w)),
                Worker::Active { step, pos, believed_expiry, .. } => {
                    // Renewing early when anything goes; just in time once calm.
                    let due = if calm { *believed_expiry <= s.now + 1 } else { *believed_expiry < s.now + LEASE_TTL };
                    if due {
                        actions.push(Action::Renew(w));
                    }
                    if s.crashes > 0 && !calm {
                        actions.push(Action::Crash(w));
                    }
                    if *pos < s.log.len() {
                        match step {
                            Step::Call { .. } if s.now < *believed_expiry => {
                                actions.push(Action::Call(w, Fate::Accepted));
                                if s.failures > 0 && !calm {
                                    actions.push(Action::Call(w, Fate::Refused));
                                }
                                if s.doubts > 0 && !calm {
                                    actions.push(Action::Call(w, Fate::Lost));
                                }
                            }
                            _ => actions.push(Action::Work(w)),
                        }
                    }
                }
            }
        }
    }
}

impl Model for SendProtocol {
    type State = Sys;
    type Action = Action;

    fn init_states(&self) -> Vec<Sys> {
        vec![Sys {
            now: 0,
            lease: None,
            lease_seq: 0,
            claims: vec![None; MESSAGES],
            log: (0..MESSAGES).map(|msg| Record { msg, attempt: 0, due: 0 }).collect(),
            committed: 0,
            rows: vec![None; MESSAGES],
            counters: CampaignCounters::default(),
            accepted: vec![0; MESSAGES],
            receipts: Vec::new(),
            workers: vec![Worker::Idle; WORKERS],
            incarnation: vec![0; WORKERS],
            crashes: self.faults.crashes,
            failures: self.faults.failures,
            doubts: self.faults.doubts,
        }]
    }

    fn actions(&self, s: &Sys, actions: &mut Vec<Action>) {
        let calm = s.now >= self.faults.until;
        self.moves(s, calm, actions);
        if calm {
            actions.retain(|a| self.next_state(s, a.clone()).is_some());
        }
        // Time cannot pass a receipt's latest arrival; once calm, it passes only when nobody
        // can act.
        let waiting = s.receipts.iter().all(|(_, by)| *by > s.now);
        if waiting && (s.now < self.faults.until || (actions.is_empty() && s.now < END_TIME)) {
            actions.push(Action::Tick);
        }
    }
    fn next_state(&self, last: &Sys, action: Action) -> Option<Sys> {
        let mut s = last.clone();
        match action {
            Action::Tick => s.now += 1,
            Action::Receipt(i) => {
                let (msg, _) = s.receipts.remove(i);
                reconcile(&mut s, msg, MessageStatus::Delivered, 0);
            }
            Action::Acquire(w) | Action::Renew(w) => {
                let me = holder(&s, w);
                let token = match lease_step(stored_lease(&s).as_ref(), &me, s.now) {
                    LeaseStep::Refuse => {
                        if matches!(action, Action::Renew(_)) {
                            s.workers[w] = Worker::Idle; // someone else has it now
                        } else {
                            return None;
                        }
                        return Some(s);
                    }
                    LeaseStep::Renew { token } => token,
                    LeaseStep::Take => {
                        s.lease_seq += 1;
                        s.lease_seq
                    }
                };
                let expires = s.now + LEASE_TTL;
                s.lease = Some((me, token, expires));
                s.workers[w] = match (&s.workers[w], action) {
                    (Worker::Active { token: t, pos, step, .. }, Action::Renew(_)) if *t == token => {
                        Worker::Active { token, believed_expiry: expires, pos: *pos, step: step.clone() }
                    }
                    // A fresh owner starts from the committed offset.
                    _ => Worker::Active { token, believed_expiry: expires, pos: s.committed, step: Step::Plan },
                };
            }
            Action::Crash(w) => {
                s.crashes -= 1;
                s.workers[w] = Worker::Idle;
                s.incarnation[w] += 1;
            }
            Action::Work(w) => self.work(&mut s, w)?,
            Action::Call(w, fate) => {
                let Worker::Active { token, believed_expiry, pos, step: Step::Call { claimed } } = s.workers[w].clone()
                else {
                    return None;
                };
                let msg = s.log[pos].msg;
                let (accepted, retry_in) = match fate {
                    Fate::Accepted => (true, 0),
                    Fate::Refused => {
                        s.failures -= 1;
                        (false, 1)
                    }
                    Fate::Lost => {
                        s.doubts -= 1;
                        (false, RECEIPT_GRACE)
                    }
                };
                if matches!(fate, Fate::Accepted | Fate::Lost) {
                    s.accepted[msg] += 1;
                    s.receipts.push((msg, s.now + RECEIPT_DELAY));
                }
                s.workers[w] =
                    Worker::Active { token, believed_expiry, pos, step: Step::Settle { claimed, accepted, retry_in } };
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("the provider never accepts a message twice", |_, s: &Sys| {
                s.accepted.iter().all(|a| *a <= 1)
            }),
            Property::always("counters equal the rows they count", |_, s: &Sys| {
                let mut tally = CampaignCounters::default();
                for row in s.rows.iter().flatten() {
                    if let Some(slot) = tally.slot(row.status) {
                        *slot += 1;
                    }
                }
                tally == s.counters
            }),
            Property::eventually("every message ends delivered with its claim settled", |_, s: &Sys| {
                s.rows.iter().all(|r| r.as_ref().is_some_and(|r| r.status == MessageStatus::Delivered))
                    && s.claims.iter().all(|c| matches!(c, Some(Claim::Done { .. })))
            }),
            Property::sometimes("a takeover happens", |_, s: &Sys| s.lease_seq >= 2),
        ]
    }
}

fn check(faults: Faults) -> usize {
    let checker = SendProtocol { faults }.checker().threads(2).spawn_bfs().join();
    checker.assert_properties();
    checker.unique_state_count()
}

#[test]
fn no_duplicate_and_nothing_lost_across_crashes_and_lease_takeovers() {
    let states = check(Faults { crashes: 1, failures: 0, doubts: 0, until: 6 });
    eprintln!("protocol model (crash, takeover, pause): {states} states");
}

#[test]
fn no_duplicate_when_calls_fail_or_their_answers_are_lost() {
    let states = check(Faults { crashes: 0, failures: 1, doubts: 1, until: 5 });
    eprintln!("protocol model (failures, lost answers, pause): {states} states");
}
