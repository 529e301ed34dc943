//! Deliver's replays and holds, on the real embedded backends and the real webhook provider
//! against a local HTTP receiver whose answer the test sets.

use super::*;
use crate::control::CampaignControl;
use pipeline::TopicBackend;
use providers::address::AddressPolicy;
use schemas::codec;
use simulator::{Simulator, SimulatorConfig};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use storage::secrets::{aad, SecretKey};
use storage::*;

struct Harness {
    _dir: tempfile::TempDir,
    state: Arc<EmbeddedState>,
    topics: Arc<pipeline::EmbeddedTopics>,
    deliver: Arc<Deliver>,
    tenant: TenantId,
    campaign: CampaignId,
    /// The HTTP status the receiver answers.
    answer: Arc<AtomicU16>,
    calls: Arc<AtomicU64>,
}

async fn receiver(answer: Arc<AtomicU16>, calls: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (answer, calls) = (answer.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A tenant (with `rate` as its limit) whose messages go to its webhook provider.
async fn harness(rate: Option<u32>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("s"), Default::default()).unwrap());
    let state = Arc::new(EmbeddedState::new(store.clone()));
    let topics =
        pipeline::EmbeddedTopics::open(&dir.path().join("t"), &pipeline::topics::all(), Default::default()).unwrap();
    let (tenant, campaign) = (TenantId(1), CampaignId(1));
    let now = now_ms();
    store
        .put_tenant(&Tenant {
            id: tenant,
            name: "t".into(),
            rate_limit_per_s: rate,
            burst: 1,
            weight: 1,
            created_ms: now,
            state: TenantState::Active,
        })
        .await
        .unwrap();
    let c = Campaign {
        id: campaign,
        tenant,
        name: "c".into(),
        template: TemplateId(1),
        audience: AudienceId(1),
        rate_limit_per_s: None,
        status: CampaignStatus::Running,
        created_ms: now,
        triggered_ms: Some(now),
        version: 0,
    };
    store.put_campaign(&c).await.unwrap();
    let (answer, calls) = (Arc::new(AtomicU16::new(200)), Arc::new(AtomicU64::new(0)));
    let url = receiver(answer.clone(), calls.clone()).await;
    let key = SecretKey::from_bytes(&[7; 32]).unwrap();
    let secrets = BTreeMap::from([("signing_secret".to_string(), "s3cret".to_string())]);
    store
        .put_provider(&ProviderConfig {
            tenant,
            settings: ProviderSettings::Webhook {
                url,
                senders: vec![SenderSettings { id: "webhook".into(), rate_limit_per_s: None, burst: 0 }],
            },
            secrets: key.seal(&aad(tenant, "webhook"), &secrets),
            updated_ms: now,
            verify_token_index: None,
        })
        .await
        .unwrap();
    let shutdown = pipeline::Shutdown::new();
    let simulator = Simulator::start(SimulatorConfig::default(), topics.clone(), shutdown).unwrap();
    let policy = AddressPolicy { allow_private: true };
    let senders =
        Arc::new(Senders::new(store.clone(), state.clone(), simulator, Some(key), Duration::from_secs(5), policy));
    let control = Arc::new(CampaignControl::new(store.clone(), state.clone(), Duration::from_millis(1)));
    let deliver = Arc::new(Deliver::new(store.clone(), state.clone(), senders, control, DeliverConfig::default()));
    Harness { _dir: dir, state, topics, deliver, tenant, campaign, answer, calls }
}

impl Harness {
    fn message(&self, recipient: u64, attempt: u32) -> RenderedMessage {
        let id = MessageId::derive(self.tenant, self.campaign, RecipientId(recipient), Channel::Sms);
        RenderedMessage {
            key: MessageKey { tenant: self.tenant, campaign: self.campaign, bucket: 0, id },
            recipient: RecipientId(recipient),
            address: format!("+1555000{recipient:04}"),
            content: Content::Sms { text: "hi".into() },
            trigger_ms: now_ms(),
            attempt,
        }
    }

    /// One `messages.ready` step over `messages`, produced.
    async fn ready(&self, messages: Vec<RenderedMessage>) -> Step<MessageBatch> {
        let value = MessageBatch { tenant: self.tenant, campaign: self.campaign, messages };
        let input = Input { partition: 0, offset: Some(0), headers: Default::default(), value, lanes: 1, lease: None };
        let mut out = Emitter::new(self.topics.clone());
        let step = self.deliver.process(vec![input], &mut out).await.unwrap();
        out.flush().await.unwrap();
        step
    }

    /// One `delivery.retry` step, produced.
    async fn retry(&self, messages: Vec<RenderedMessage>) {
        let value = RetryBatch { tenant: self.tenant, campaign: self.campaign, redrive: false, messages };
        let input = Input { partition: 0, offset: Some(0), headers: Default::default(), value, lanes: 1, lease: None };
        let mut out = Emitter::new(self.topics.clone());
        Redeliver::new(self.deliver.clone()).process(vec![input], &mut out).await.unwrap();
        out.flush().await.unwrap();
    }

    /// Every record on `topic` so far, with its headers.
    async fn records<T: serde::de::DeserializeOwned>(
        &self,
        topic: &pipeline::Topic<T>,
    ) -> Vec<(schemas::envelope::Headers, T)> {
        let mut all = Vec::new();
        for partition in 0..topic.spec.partitions() {
            let records = self.topics.fetch(topic.name(), partition, 0, 10_000, Duration::ZERO).await.unwrap();
            all.extend(records.into_iter().map(|r| (r.headers, codec::decode(&r.value).unwrap())));
        }
        all
    }
}

fn outcomes(batches: Vec<(schemas::envelope::Headers, OutcomeBatch)>) -> Vec<Outcome> {
    batches
        .into_iter()
        .flat_map(|(_, b)| b.events)
        .filter_map(|e| match e {
            OutcomeEvent::Message(o) => Some(o),
            OutcomeEvent::Sealed { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_done_claim_re_emits_the_outcome_the_letter_and_the_receipt() {
    let h = harness(None).await;
    let (accepted, refused) = (h.message(1, 0), h.message(2, 0));
    h.ready(vec![accepted.clone()]).await;
    h.answer.store(400, Ordering::SeqCst); // permanent
    h.ready(vec![refused.clone()]).await;
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
    assert_eq!(h.records(&pipeline::topics::RECEIPTS).await.len(), 1, "a webhook's acceptance is its delivery");
    assert_eq!(h.records(&pipeline::topics::DLQ).await.len(), 1);

    // The step is replayed (a crash before its input was committed): nothing is called again,
    // and everything the calls produced is emitted again.
    h.ready(vec![accepted.clone(), refused.clone()]).await;
    assert_eq!(h.calls.load(Ordering::SeqCst), 2, "no call on replay");
    let receipts: Vec<Receipt> =
        h.records(&pipeline::topics::RECEIPTS).await.into_iter().flat_map(|(_, b)| b.receipts).collect();
    assert_eq!(receipts.len(), 2);
    assert!(receipts.iter().all(|r| r.key == Some(accepted.key) && r.status == ReceiptStatus::Delivered));
    let letters: Vec<DeadLetter> =
        h.records(&pipeline::topics::DLQ).await.into_iter().flat_map(|(_, b)| b.letters).collect();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.message.key == refused.key && l.reason.starts_with("http_400")), "{letters:?}");
    let outcomes = outcomes(h.records(&pipeline::topics::OUTCOMES).await);
    assert_eq!(outcomes.len(), 4);
    assert!(outcomes.iter().filter(|o| o.key == accepted.key).all(|o| matches!(o.kind, OutcomeKind::Accepted { .. })));
    assert!(outcomes.iter().filter(|o| o.key == refused.key).all(|o| matches!(o.kind, OutcomeKind::Failed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_retrying_claim_schedules_its_retry_once_at_the_recorded_time() {
    let h = harness(None).await;
    h.answer.store(503, Ordering::SeqCst); // transient
    let m = h.message(1, 0);
    h.ready(vec![m.clone()]).await;
    h.ready(vec![m.clone()]).await; // replay
    assert_eq!(h.calls.load(Ordering::SeqCst), 1, "no call on replay");
    let retries = h.records(&pipeline::topics::RETRY).await;
    assert_eq!(retries.len(), 2);
    let dues: Vec<u64> =
        retries.iter().map(|(headers, _)| headers.get(pipeline::stage::DUE_HEADER).unwrap().parse().unwrap()).collect();
    assert_eq!(dues[0], dues[1], "the replay keeps the recorded due time");
    assert!(dues[0] >= now_ms() + 200, "due at its backoff, not at once");
    assert!(retries.iter().all(|(_, b)| b.messages.len() == 1 && b.messages[0].attempt == 1), "the retry is attempt 2");
    let claim = h.state.get_claims(&[m.key]).await.unwrap().remove(0);
    assert!(matches!(claim, Some(Claim::Retrying { attempt: 1, due_ms }) if due_ms == dues[0]), "{claim:?}");

    // Both retry records arrive: the first sends attempt 2, the second finds it done.
    h.answer.store(200, Ordering::SeqCst);
    let retried = retries[0].1.messages.clone();
    h.retry(retried.clone()).await;
    h.retry(retried).await;
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
    let accepted: Vec<Outcome> = outcomes(h.records(&pipeline::topics::OUTCOMES).await)
        .into_iter()
        .filter(|o| matches!(o.kind, OutcomeKind::Accepted { .. }))
        .collect();
    assert_eq!(accepted.len(), 2);
    assert!(accepted.iter().all(|o| o.attempts == 2));
    assert_eq!(h.records(&pipeline::topics::RETRY).await.len(), 2, "no further retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_campaign_takes_no_claim_and_no_pacing_slot() {
    let h = harness(Some(100)).await;
    h.state.publish_status(h.tenant, h.campaign, CampaignStatus::Paused).await.unwrap();
    let messages: Vec<RenderedMessage> = (1..=20).map(|r| h.message(r, 0)).collect();
    let before = now_ms();
    let step = h.ready(messages.clone()).await;
    match step {
        Step::Wait { from: 0, replacement: Some(rest), until_ms } => {
            assert_eq!(rest.messages.len(), 20, "every message handed back");
            assert!(until_ms >= before + 900, "looked at again in a second, not spinning");
        }
        other => panic!("expected the batch back, got {other:?}"),
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
    let keys: Vec<MessageKey> = messages.iter().map(|m| m.key).collect();
    assert!(h.state.get_claims(&keys).await.unwrap().iter().all(Option::is_none), "no claim taken");
    assert!(
        h.records(&pipeline::topics::OUTCOMES).await.is_empty() && h.records(&pipeline::topics::RETRY).await.is_empty()
    );
    // The tenant's bucket was never touched: created now, it starts empty.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pace = Pace { rate_per_s: 100.0, burst: 1 };
    assert_eq!(h.state.take_tokens(&format!("pace/{}", h.tenant), pace, 5).await.unwrap().granted, 0);

    // Resumed: the batch goes.
    h.state.publish_status(h.tenant, h.campaign, CampaignStatus::Running).await.unwrap();
    let mut rest = messages;
    for _ in 0..100 {
        match h.ready(rest).await {
            Step::Done => break,
            Step::Wait { replacement, .. } => rest = replacement.unwrap().messages,
        }
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_partition_lease_was_taken_over_never_calls() {
    let h = harness(None).await;
    let name = "partition:deliver:0";
    let old = h.state.acquire_lease(name, "old", 1, now_ms()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = h.state.acquire_lease(name, "new", 60_000, now_ms()).await.unwrap().unwrap();
    assert_ne!(old.token, new.token);
    let step = |token| {
        let value = MessageBatch { tenant: h.tenant, campaign: h.campaign, messages: vec![h.message(1, 0)] };
        let lease = Some(Arc::new(pipeline::PartitionLease { name: name.into(), token }));
        Input { partition: 0, offset: Some(0), headers: Default::default(), value, lanes: 1, lease }
    };

    // The deposed worker's claim write is refused: no call, and the runner is told to let the
    // partition go (not to retry, not to dead-letter).
    let mut out = Emitter::new(h.topics.clone());
    let e = h.deliver.process(vec![step(old.token)], &mut out).await.expect_err("fenced");
    assert_eq!(e.hint, pipeline::RetryHint::Abandon, "{e}");
    assert_eq!(h.calls.load(Ordering::SeqCst), 0, "no call after losing the partition");

    // The new owner sends it, once.
    let mut out = Emitter::new(h.topics.clone());
    h.deliver.process(vec![step(new.token)], &mut out).await.unwrap();
    out.flush().await.unwrap();
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
}
