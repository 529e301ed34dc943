use super::*;
use proptest::prelude::*;

fn ev(status: MessageStatus, at: u64) -> MessageEvent {
    MessageEvent {
        status,
        at_ms: at,
        recipient: Some(RecipientId(1)),
        address: Some("+15550000001".into()),
        attempts: 1,
        trigger_ms: 1,
        provider_message_id: Some(("simulator".into(), "sim.1".into())),
        error: None,
    }
}

/// Applies events to one row, keeping counters the way `Reconciler::apply` does.
fn run(events: &[MessageEvent]) -> (Option<MessageStatus>, CampaignCounters) {
    let mut row = None;
    let mut counters = CampaignCounters::default();
    for e in events {
        if let Some(previous) = apply_event(&mut row, e).transition {
            if let Some(slot) = previous.and_then(|p| counters.slot(p)) {
                *slot -= 1;
            }
            if let Some(slot) = counters.slot(row.as_ref().unwrap().status) {
                *slot += 1;
            }
        }
    }
    (row.map(|r| r.status), counters)
}

#[test]
fn receipts_out_of_order_reach_the_same_state() {
    use MessageStatus::*;
    let in_order = run(&[ev(Sent, 1), ev(Delivered, 2), ev(Read, 3)]);
    let shuffled = run(&[ev(Read, 3), ev(Sent, 1), ev(Delivered, 2), ev(Read, 3), ev(Sent, 1)]);
    assert_eq!(in_order, shuffled);
    assert_eq!(in_order.0, Some(Read));
    assert_eq!(in_order.1.read, 1);
    assert_eq!(in_order.1.known(), 1);
}

#[test]
fn replaying_an_event_changes_nothing() {
    let mut row = None;
    let first = apply_event(&mut row, &ev(MessageStatus::Sent, 1));
    assert_eq!(first, Applied { transition: Some(None), changed: true, learned_provider_id: true, superseded: false });
    let snapshot = row.clone();
    assert_eq!(apply_event(&mut row, &ev(MessageStatus::Sent, 1)), Applied::default());
    assert_eq!(row, snapshot);
}

#[test]
fn failed_after_sent_wins_and_delivered_after_failed_wins() {
    use MessageStatus::*;
    assert_eq!(run(&[ev(Sent, 1), ev(Failed, 2)]).0, Some(Failed));
    assert_eq!(run(&[ev(Failed, 1), ev(Delivered, 2)]).0, Some(Delivered));
    // An accept racing a cancel: the message went out.
    assert_eq!(run(&[ev(Cancelled, 1), ev(Sent, 2)]).0, Some(Sent));
}

fn status() -> impl Strategy<Value = MessageStatus> {
    prop::sample::select(MessageStatus::ALL[1..].to_vec())
}

proptest! {
    /// Any permutation, with any duplication, of a set of events gives the same final status
    /// and counters that count exactly one message.
    #[test]
    fn order_and_duplicates_do_not_matter(statuses in prop::collection::vec(status(), 1..8),
                                          order in prop::collection::vec(any::<prop::sample::Index>(), 1..24)) {
        let events: Vec<_> = statuses.iter().enumerate().map(|(i, s)| ev(*s, i as u64)).collect();
        let canonical = run(&events);
        let mut shuffled: Vec<_> = order.iter().map(|i| events[i.index(events.len())].clone()).collect();
        shuffled.extend(events.iter().cloned()); // every event at least once
        let replayed = run(&shuffled);
        prop_assert_eq!(canonical.0, replayed.0);
        prop_assert_eq!(canonical.1, replayed.1);
        prop_assert_eq!(replayed.1.known(), 1);
    }
}

#[test]
fn a_redriven_attempt_supersedes_the_dead_letter_in_any_order() {
    use MessageStatus::*;
    let at = |status, attempts| MessageEvent { attempts, ..ev(status, attempts as u64) };
    let dead = at(DeadLettered, 6);
    let resent = at(Sent, 7);
    let delivered = MessageEvent { attempts: 0, ..ev(Delivered, 9) };
    for order in [[&dead, &resent, &delivered], [&resent, &dead, &delivered], [&delivered, &dead, &resent]] {
        let events: Vec<_> = order.iter().map(|e| (*e).clone()).collect();
        let (status, counters) = run(&events);
        assert_eq!(status, Some(Delivered), "{order:?}");
        assert_eq!((counters.delivered, counters.known()), (1, 1));
    }
    // Without a later attempt, the dead letter stands against an older accept.
    assert_eq!(run(&[at(Sent, 1), at(DeadLettered, 6)]).0, Some(DeadLettered));
}

#[test]
fn a_failed_receipt_that_beats_its_own_acceptance_stays_failed() {
    use MessageStatus::*;
    // Receipts carry no attempt (0); the acceptance outcome carries attempt 1 and the same id.
    let receipt = MessageEvent { attempts: 0, recipient: None, address: None, trigger_ms: 0, ..ev(Failed, 5) };
    let accepted = ev(Sent, 1);
    assert_eq!(run(&[receipt.clone(), accepted.clone()]).0, Some(Failed), "receipt first");
    assert_eq!(run(&[accepted.clone(), receipt.clone()]).0, Some(Failed), "acceptance first");
    let (_, counters) = run(&[receipt.clone(), accepted, receipt]);
    assert_eq!((counters.failed, counters.sent), (1, 0));
}

/// An embedded store and topics in a temporary directory, and a reconciler over them.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<storage::EmbeddedStore>,
    topics_backend: Arc<dyn pipeline::TopicBackend>,
    reconciler: Arc<Reconciler>,
}

impl Fixture {
    fn new() -> Self {
        let _dir = tempfile::tempdir().unwrap();
        let store = Arc::new(storage::EmbeddedStore::open(&_dir.path().join("s"), Default::default()).unwrap());
        let topics_backend: Arc<dyn pipeline::TopicBackend> =
            pipeline::EmbeddedTopics::open(&_dir.path().join("t"), &topics::all(), Default::default()).unwrap();
        let reconciler = Reconciler::new(store.clone(), store.clone());
        Self { _dir, store, topics_backend, reconciler }
    }
}

/// One record of `partition`, as a runner hands it to a stage.
fn input<T>(partition: Partition, value: T) -> Input<T> {
    Input { partition, offset: Some(0), headers: Default::default(), value, lanes: 1, lease: None }
}

/// The single-writer contract holds when records arrive on the wrong reconcile partition: a
/// mixed outcome batch applies only its own campaign and forwards the other's, and a receipt
/// without callback data is resolved where it lands and forwarded, keyed, to its campaign's
/// partition; only there does it change the message and the counters.
#[tokio::test]
async fn what_belongs_to_another_partition_is_forwarded_not_applied() {
    let Fixture { _dir, store, topics_backend, reconciler } = Fixture::new();
    let tenant = TenantId(1);
    let a = CampaignId(1);
    let pa = topics::campaign_partition(tenant, a);
    let b = (2..).map(CampaignId).find(|c| topics::campaign_partition(tenant, *c) != pa).unwrap();
    let pb = topics::campaign_partition(tenant, b);
    let key = |campaign| MessageKey {
        tenant,
        campaign,
        bucket: 0,
        id: MessageId::derive(tenant, campaign, RecipientId(1), Channel::Sms),
    };
    let accepted = |campaign, pmid: &str| {
        OutcomeEvent::Message(Outcome {
            key: key(campaign),
            recipient: RecipientId(1),
            address: "+15550000001".into(),
            kind: OutcomeKind::Accepted { provider: "sms".into(), provider_message_id: pmid.into() },
            attempts: 1,
            at_ms: 1,
            trigger_ms: 1,
        })
    };
    let fetch = |topic: &'static str, partition| {
        let backend = topics_backend.clone();
        async move { backend.fetch(topic, partition, 0, 100, Duration::ZERO).await.unwrap() }
    };

    let mut out = Emitter::new(topics_backend.clone());
    let mixed = OutcomeBatch { tenant, events: vec![accepted(a, "pm-a"), accepted(b, "pm-b")] };
    ReconcileOutcomes(reconciler.clone()).process(vec![input(pa, mixed)], &mut out).await.unwrap();
    out.flush().await.unwrap();
    assert_eq!(store.get_counters(tenant, a).await.unwrap().unwrap().sent, 1);
    assert!(store.get_counters(tenant, b).await.unwrap().is_none(), "campaign b is partition {pb}'s to write");
    let forwarded = fetch(topics::OUTCOMES.name(), pb).await;
    assert_eq!(forwarded.len(), 1);
    let batch: OutcomeBatch = schemas::codec::decode(&forwarded[0].value).unwrap();
    assert_eq!(batch.events, vec![accepted(b, "pm-b")]);

    // A receipt naming only its provider id, on campaign b's partition.
    let receipt = Receipt {
        provider: "sms".into(),
        provider_message_id: "pm-a".into(),
        key: None,
        status: ReceiptStatus::Delivered,
        at_ms: 2,
        error: None,
    };
    let mut out = Emitter::new(topics_backend.clone());
    let batch = ReceiptBatch { tenant, receipts: vec![receipt.clone()] };
    ReconcileReceipts(reconciler.clone()).process(vec![input(pb, batch)], &mut out).await.unwrap();
    out.flush().await.unwrap();
    assert_eq!(store.get_counters(tenant, a).await.unwrap().unwrap().delivered, 0, "not applied off its partition");
    let forwarded = fetch(topics::RECEIPTS.name(), pa).await;
    assert_eq!(forwarded.len(), 1);
    let batch: ReceiptBatch = schemas::codec::decode(&forwarded[0].value).unwrap();
    assert_eq!(batch.receipts, vec![Receipt { key: Some(key(a)), ..receipt }]);

    let mut out = Emitter::new(topics_backend.clone());
    ReconcileReceipts(reconciler.clone()).process(vec![input(pa, batch)], &mut out).await.unwrap();
    let counters = store.get_counters(tenant, a).await.unwrap().unwrap();
    assert_eq!((counters.sent, counters.delivered), (0, 1));
    assert_eq!(reconciler.metrics.forwarded.load(Ordering::Relaxed), 2);
}

/// Rows that await their first receipt stay in the recent-row cache while receipts for other
/// rows are applied: a receipt's write replaces a held row but never adds one, so it cannot
/// push out a row whose receipt is still to come (which would then be read from the store).
#[tokio::test]
async fn receipts_do_not_push_out_rows_that_await_theirs() {
    let Fixture { _dir, store, topics_backend, reconciler } = Fixture::new();
    let (tenant, campaign) = (TenantId(1), CampaignId(1));
    let partition = topics::campaign_partition(tenant, campaign);
    let key = |n: u64| MessageKey {
        tenant,
        campaign,
        bucket: 0,
        id: MessageId::derive(tenant, campaign, RecipientId(n), Channel::Sms),
    };
    let accept = |range: std::ops::Range<u64>| {
        let events = range
            .map(|n| {
                OutcomeEvent::Message(Outcome {
                    key: key(n),
                    recipient: RecipientId(n),
                    address: format!("+1555{n:07}"),
                    kind: OutcomeKind::Accepted { provider: "sms".into(), provider_message_id: format!("pm-{n}") },
                    attempts: 1,
                    at_ms: 1,
                    trigger_ms: 1,
                })
            })
            .collect();
        input(partition, OutcomeBatch { tenant, events })
    };
    let deliver = |range: std::ops::Range<u64>| {
        let receipts = range
            .map(|n| Receipt {
                provider: "sms".into(),
                provider_message_id: format!("pm-{n}"),
                key: Some(key(n)),
                status: ReceiptStatus::Delivered,
                at_ms: 2,
                error: None,
            })
            .collect();
        input(partition, ReceiptBatch { tenant, receipts })
    };
    let g = ROW_GENERATION as u64;
    let mut out = Emitter::new(topics_backend);
    let outcomes = ReconcileOutcomes(reconciler.clone());
    let receipts = ReconcileReceipts(reconciler.clone());
    outcomes.process(vec![accept(0..g)], &mut out).await.unwrap();
    outcomes.process(vec![accept(g..2 * g)], &mut out).await.unwrap();
    receipts.process(vec![deliver(0..g)], &mut out).await.unwrap();
    outcomes.process(vec![accept(2 * g..3 * g)], &mut out).await.unwrap();
    let reads = reconciler.metrics.row_reads.load(Ordering::Relaxed);
    receipts.process(vec![deliver(g..2 * g)], &mut out).await.unwrap();
    assert_eq!(
        reconciler.metrics.row_reads.load(Ordering::Relaxed) - reads,
        0,
        "the rows accepted second were still held when their receipts came"
    );
    let counters = store.get_counters(tenant, campaign).await.unwrap().unwrap();
    assert_eq!((counters.delivered, counters.sent), (2 * g, g));
}
