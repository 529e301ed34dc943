//! Conformance kits: what every store ([`store`]) and every shared state ([`shared_state`])
//! must do, as test functions each backend's tests call — the embedded backends here, the CQL
//! store and Redis in theirs. They assert the contracts of `crate::traits` and `crate::state`,
//! including the races (concurrent writers, exactly one wins), not an implementation.
//!
//! Each kit expects an empty backend and uses tenants 9001-9003.

use crate::model::*;
use crate::state::{ClaimWrite, Fence, Pace, SharedState};
use crate::{Error, Store};
use schemas::*;
use std::sync::Arc;
use std::time::Duration;

const T1: TenantId = TenantId(9001);
const T2: TenantId = TenantId(9002);

fn tenant(id: TenantId) -> Tenant {
    Tenant {
        id,
        name: format!("kit-{id}"),
        rate_limit_per_s: Some(100),
        burst: 10,
        weight: 1,
        created_ms: 0,
        state: TenantState::Active,
    }
}

fn campaign(tenant: TenantId, id: u64, version: u64, status: CampaignStatus) -> Campaign {
    Campaign {
        id: CampaignId(id),
        tenant,
        name: "c".into(),
        template: TemplateId(1),
        audience: AudienceId(1),
        rate_limit_per_s: None,
        status,
        created_ms: 0,
        triggered_ms: None,
        version,
    }
}

pub(crate) fn record(i: u64, status: MessageStatus) -> MessageRecord {
    MessageRecord {
        recipient: RecipientId(i),
        address: format!("+1555{i:07}"),
        status,
        attempts: 1,
        provider_message_id: None,
        error: None,
        trigger_ms: 0,
        history: vec![(status, i)],
    }
}

pub(crate) fn key(tenant: TenantId, campaign: u64, i: u64) -> MessageKey {
    let id = MessageId::derive(tenant, CampaignId(campaign), RecipientId(i), Channel::Sms);
    MessageKey { tenant, campaign: CampaignId(campaign), bucket: crate::bucket_of(RecipientId(i)), id }
}

fn whatsapp(tenant: TenantId, senders: &[&str]) -> ProviderConfig {
    ProviderConfig {
        tenant,
        settings: ProviderSettings::WhatsApp {
            base_url: "https://graph.example".into(),
            api_version: "v21.0".into(),
            senders: senders
                .iter()
                .map(|s| SenderSettings { id: s.to_string(), rate_limit_per_s: Some(80), burst: 8 })
                .collect(),
            daily_unique_limit: None,
        },
        secrets: crate::secrets::Sealed::default(),
        updated_ms: 0,
        verify_token_index: Some([tenant.0 as u8; 32]),
    }
}

/// The store contract (`crate::traits`). `store` must be empty.
pub async fn store(store: Arc<dyn Store>) {
    tenants_and_limits(store.as_ref()).await;
    campaigns_compare_and_set(&store).await;
    providers_and_sender_ownership(&store).await;
    recipients_and_suppressions(store.as_ref()).await;
    message_log(store.as_ref()).await;
    timeline(store.as_ref()).await;
    purge(store.as_ref()).await;
}

async fn tenants_and_limits(store: &dyn Store) {
    store.put_tenant(&tenant(T1)).await.unwrap();
    for (bad, code) in [
        (Tenant { rate_limit_per_s: Some(0), ..tenant(T1) }, "invalid_rate_limit"),
        (Tenant { burst: 1_001, ..tenant(T1) }, "invalid_burst"),
        (Tenant { rate_limit_per_s: None, burst: 100_001, ..tenant(T1) }, "invalid_burst"),
        (Tenant { weight: 0, ..tenant(T1) }, "invalid_weight"),
        (Tenant { weight: 1_001, ..tenant(T1) }, "invalid_weight"),
    ] {
        let err = store.put_tenant(&bad).await.unwrap_err();
        assert!(matches!(err, Error::Invalid { code: c, .. } if c == code), "{bad:?}: {err}");
    }
    assert_eq!(store.get_tenant(T1).await.unwrap(), Some(tenant(T1)), "nothing applied");
    let deleted = Tenant { state: TenantState::Deleted { at_ms: 5 }, ..tenant(T1) };
    store.put_tenant(&deleted).await.unwrap();
    assert_eq!(store.get_tenant(T1).await.unwrap().map(|t| t.state), Some(TenantState::Deleted { at_ms: 5 }));
    assert!(store.list_tenants().await.unwrap().iter().any(|t| t.id == T1), "tombstones are listed");
    store.put_tenant(&tenant(T1)).await.unwrap();
}

async fn campaigns_compare_and_set(store: &Arc<dyn Store>) {
    store.put_campaign(&campaign(T1, 1, 0, CampaignStatus::Running)).await.unwrap();
    // Sixteen writers race from the same read; exactly one wins.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let status = if i % 2 == 0 { CampaignStatus::Paused } else { CampaignStatus::Cancelled };
            tokio::spawn(async move { store.update_campaign(&campaign(T1, 1, 0, status), 0).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += u32::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(store.get_campaign(T1, CampaignId(1)).await.unwrap().unwrap().version, 1);
    assert!(!store.update_campaign(&campaign(T1, 1, 0, CampaignStatus::Running), 0).await.unwrap(), "stale version");
    assert!(store.update_campaign(&campaign(T1, 1, 1, CampaignStatus::Running), 1).await.unwrap());
    assert!(
        !store.update_campaign(&campaign(T1, 9, 0, CampaignStatus::Running), 0).await.unwrap(),
        "no update creates"
    );
    assert!(store.get_campaign(T2, CampaignId(1)).await.unwrap().is_none(), "per tenant");
}

async fn providers_and_sender_ownership(store: &Arc<dyn Store>) {
    store.put_provider(&whatsapp(T1, &["kit-p1", "kit-p2"])).await.unwrap();
    let taken = store.put_provider(&whatsapp(T2, &["kit-p3", "kit-p1"])).await;
    assert!(matches!(taken, Err(Error::SenderTaken { ref sender }) if sender == "kit-p1"), "{taken:?}");
    assert!(store.get_provider(T2, ProviderKind::WhatsApp).await.unwrap().is_none(), "nothing written");
    assert_eq!(store.find_sender(ProviderKind::WhatsApp, "kit-p2").await.unwrap(), Some(T1));
    assert_eq!(store.find_verify_token(&[T1.0 as u8; 32]).await.unwrap(), Some(T1));
    // Replacing re-indexes; deleting releases.
    store.put_provider(&whatsapp(T1, &["kit-p1"])).await.unwrap();
    assert_eq!(store.find_sender(ProviderKind::WhatsApp, "kit-p2").await.unwrap(), None);
    assert!(store.delete_provider(T1, ProviderKind::WhatsApp).await.unwrap());
    assert_eq!(store.find_sender(ProviderKind::WhatsApp, "kit-p1").await.unwrap(), None);
    assert_eq!(store.find_verify_token(&[T1.0 as u8; 32]).await.unwrap(), None);
    // Webhook senders are each tenant's own.
    let webhook = |t| ProviderConfig {
        tenant: t,
        settings: ProviderSettings::Webhook {
            url: "https://hooks.example".into(),
            senders: vec![SenderSettings { id: "webhook".into(), rate_limit_per_s: None, burst: 0 }],
        },
        secrets: crate::secrets::Sealed::default(),
        updated_ms: 0,
        verify_token_index: None,
    };
    store.put_provider(&webhook(T1)).await.unwrap();
    store.put_provider(&webhook(T2)).await.unwrap();
    // Racing tenants cannot both take one phone number.
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put_provider(&whatsapp(TenantId(9100 + i), &["kit-race"])).await.is_ok() })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += u32::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one tenant may own a phone number id");
}

async fn recipients_and_suppressions(store: &dyn Store) {
    let a = AudienceId(77);
    store
        .put_audience(&Audience {
            id: a,
            tenant: T1,
            name: "a".into(),
            recipient_count: 0,
            next_recipient_id: 0,
            created_ms: 0,
        })
        .await
        .unwrap();
    let n = crate::BUCKET_SIZE + 50;
    let mut rows: Vec<NewRecipient> =
        (0..n).map(|i| NewRecipient { address: format!("+1555{i:07}"), attrs: vec![] }).collect();
    rows.push(rows[3].clone());
    assert_eq!(store.add_recipients(T1, a, rows).await.unwrap(), AddedRecipients { added: n, duplicates: 1 });
    let again = vec![NewRecipient { address: "+15550000007".into(), attrs: vec![] }];
    assert_eq!(store.add_recipients(T1, a, again).await.unwrap().duplicates, 1);
    assert_eq!(store.get_audience(T1, a).await.unwrap().unwrap().recipient_count, n);
    let (mut from, mut seen) = (RecipientId(0), 0u64);
    loop {
        let page = store.read_recipients(T1, a, from, 777).await.unwrap();
        let Some(last) = page.last() else { break };
        for r in &page {
            assert_eq!((r.id.0, r.bucket), (seen, crate::bucket_of(r.id)), "dense ids in order across buckets");
            seen += 1;
        }
        from = RecipientId(last.id.0 + 1);
    }
    assert_eq!(seen, n);
    assert!(store.read_recipients(T2, a, RecipientId(0), 10).await.unwrap().is_empty(), "per tenant");

    store.put_suppression(T1, "a@x.io").await.unwrap();
    assert_eq!(store.suppressed(T1, &["a@x.io", "b@x.io"]).await.unwrap(), vec![true, false]);
    assert_eq!(store.suppressed(T2, &["a@x.io"]).await.unwrap(), vec![false]);
    assert_eq!(store.list_suppressions(T1, None, 10).await.unwrap(), vec!["a@x.io".to_string()]);
    assert!(store.remove_suppression(T1, "a@x.io").await.unwrap());
    assert!(!store.remove_suppression(T1, "a@x.io").await.unwrap());

    assert_eq!(store.get_checkpoint(T1, CampaignId(5)).await.unwrap(), ChunkCheckpoint::default());
    let cp = ChunkCheckpoint { next_recipient: 10, emitted: 10, next_seq: 1, done: false };
    store.put_checkpoint(T1, CampaignId(5), cp).await.unwrap();
    assert_eq!(store.get_checkpoint(T1, CampaignId(5)).await.unwrap(), cp);
}

async fn message_log(store: &dyn Store) {
    // Rows, the tenant-scoped provider-id index, counters, DLQ entries.
    let (k1, k2) = (key(T1, 3, 1), key(T2, 3, 1));
    for k in [k1, k2] {
        let write = LogWrite {
            key: k,
            record: record(1, MessageStatus::Sent),
            index: Some(("whatsapp".into(), "wamid.X".into())),
        };
        let counters = vec![(k.tenant, k.campaign, CampaignCounters { total: Some(1), sent: 1, ..Default::default() })];
        store.apply(LogBatch { writes: vec![write], counters, ..Default::default() }).await.unwrap();
    }
    assert_eq!(store.lookup_provider_ids(T1, "whatsapp", &["wamid.X"]).await.unwrap(), vec![Some(k1)]);
    assert_eq!(store.lookup_provider_ids(T2, "whatsapp", &["wamid.X"]).await.unwrap(), vec![Some(k2)]);
    assert_eq!(store.lookup_provider_ids(TenantId(9003), "whatsapp", &["wamid.X"]).await.unwrap(), vec![None]);
    assert_eq!(store.get_messages(&[k1]).await.unwrap()[0].as_ref().map(|r| r.status), Some(MessageStatus::Sent));
    assert_eq!(store.get_counters(T1, CampaignId(3)).await.unwrap().map(|c| c.sent), Some(1));
    // Scans page in (bucket, id) order without gaps or repeats.
    let writes: Vec<LogWrite> = (2..40)
        .map(|i| LogWrite { key: key(T1, 3, i), record: record(i, MessageStatus::Delivered), index: None })
        .collect();
    store.apply(LogBatch { writes, ..Default::default() }).await.unwrap();
    let (mut after, mut all) = (None, Vec::new());
    loop {
        let page = store.scan_messages(T1, CampaignId(3), after, 7).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some((last.bucket, last.id));
        all.extend(page.into_iter().map(|(k, _)| (k.bucket, k.id)));
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((all.len(), all), (39, sorted));
    // DLQ entries are written, listed per campaign and cleared when superseded.
    let letter = |k: MessageKey| DlqEntry {
        key: k,
        letter: DeadLetter {
            message: RenderedMessage {
                key: k,
                recipient: RecipientId(1),
                address: "+15550000001".into(),
                content: Content::Sms { text: "x".into() },
                trigger_ms: 0,
                attempt: 1,
            },
            reason: "503: busy".into(),
            attempts: 1,
            at_ms: 0,
            not_before_ms: None,
        },
    };
    store.apply(LogBatch { dead_letters: vec![letter(k1)], ..Default::default() }).await.unwrap();
    assert_eq!(store.scan_dlq(T1, CampaignId(3), None, 10).await.unwrap().len(), 1);
    assert!(store.scan_dlq(T2, CampaignId(3), None, 10).await.unwrap().is_empty());
    store.apply(LogBatch { cleared_dead_letters: vec![k1], ..Default::default() }).await.unwrap();
    assert!(store.scan_dlq(T1, CampaignId(3), None, 10).await.unwrap().is_empty());
}

async fn timeline(store: &dyn Store) {
    // One point per window, the last write in a window wins; paged; scoped by tenant.
    let sent = |tenant, n| vec![(tenant, CampaignId(4), CampaignCounters { sent: n, ..Default::default() })];
    for (tenant, n, at_ms) in [(T1, 1, 10_000), (T2, 99, 10_000), (T1, 2, 12_000), (T1, 5, 17_000)] {
        store.apply(LogBatch { counters: sent(tenant, n), at_ms, ..Default::default() }).await.unwrap();
    }
    let points = |p: Vec<(u64, CampaignCounters)>| p.into_iter().map(|(at, c)| (at, c.sent)).collect::<Vec<_>>();
    assert_eq!(points(store.get_timeline(T1, CampaignId(4), None, 10).await.unwrap()), [(10_000, 2), (15_000, 5)]);
    assert_eq!(points(store.get_timeline(T1, CampaignId(4), None, 1).await.unwrap()), [(10_000, 2)]);
    assert_eq!(points(store.get_timeline(T1, CampaignId(4), Some(10_000), 10).await.unwrap()), [(15_000, 5)]);
    assert_eq!(points(store.get_timeline(T2, CampaignId(4), None, 10).await.unwrap()), [(10_000, 99)]);
    assert_eq!(store.get_counters(T1, CampaignId(4)).await.unwrap().map(|c| c.sent), Some(5));
}

async fn purge(store: &dyn Store) {
    // T1 owns rows in every table by now; T2 too.
    let mut steps = 0;
    while !store.purge_tenant(T1, 16).await.unwrap() {
        steps += 1;
        assert!(steps < 10_000);
    }
    assert!(store.list_campaigns(T1).await.unwrap().is_empty());
    assert!(store.list_audiences(T1).await.unwrap().is_empty());
    assert!(store.read_recipients(T1, AudienceId(77), RecipientId(0), 10).await.unwrap().is_empty());
    assert!(store.scan_messages(T1, CampaignId(3), None, 10).await.unwrap().is_empty());
    assert_eq!(store.lookup_provider_ids(T1, "whatsapp", &["wamid.X"]).await.unwrap(), vec![None]);
    assert!(store.get_counters(T1, CampaignId(3)).await.unwrap().is_none());
    assert!(store.get_timeline(T1, CampaignId(4), None, 10).await.unwrap().is_empty());
    assert_eq!(store.get_timeline(T2, CampaignId(4), None, 10).await.unwrap().len(), 1);
    assert!(store.list_providers(T1).await.unwrap().is_empty());
    assert!(store.get_tenant(T1).await.unwrap().is_some(), "the tenant row stays");
    // The other tenant is untouched.
    assert_eq!(store.lookup_provider_ids(T2, "whatsapp", &["wamid.X"]).await.unwrap(), vec![Some(key(T2, 3, 1))]);
    assert_eq!(store.list_providers(T2).await.unwrap().len(), 1);
}

/// The shared state contract (`crate::state`). `state` must be empty.
pub async fn shared_state(state: Arc<dyn SharedState>) {
    ids(&state).await;
    claims_and_fencing(&state).await;
    tokens(state.as_ref()).await;
    idempotency(&state).await;
    quota_flags_and_stopped(state.as_ref()).await;
}

async fn ids(state: &Arc<dyn SharedState>) {
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { state.next_id("kit").await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64, "ids are unique under concurrency");
    assert!(ids[0] >= 1);
}

async fn claims_and_fencing(state: &Arc<dyn SharedState>) {
    let k = key(T1, 8, 1);
    let inflight = Claim::InFlight { attempt: 1, at_ms: 5 };
    // Concurrent claimers of one message: exactly one wins.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let state = state.clone();
            let w = ClaimWrite { key: k, expected: None, claim: inflight.clone() };
            tokio::spawn(async move { state.put_claims(&[w], None).await.unwrap()[0] })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += u32::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "a claim is compare-and-set");
    assert_eq!(state.get_claims(&[k]).await.unwrap(), vec![Some(inflight.clone())]);
    let done = Claim::Done { attempt: 1, outcome: OutcomeKind::Suppressed, letter: None, receipt: false };
    let stale = ClaimWrite { key: k, expected: None, claim: done.clone() };
    let fresh = ClaimWrite { key: k, expected: Some(inflight.clone()), claim: done.clone() };
    assert_eq!(state.put_claims(&[stale, fresh], None).await.unwrap(), vec![false, true]);

    // Leases: one holder at a time; a renewal keeps the token, a takeover after expiry makes a
    // new one, and writes fenced by the old token are refused.
    let a = state.acquire_lease("kit/deliver/0", "worker-a", 1_000, 10_000).await.unwrap().unwrap();
    assert!(state.acquire_lease("kit/deliver/0", "worker-b", 1_000, 10_500).await.unwrap().is_none());
    // Reading a lease takes nothing.
    assert!(state.get_lease("kit/nobody").await.unwrap().is_none());
    let read = state.get_lease("kit/deliver/0").await.unwrap().unwrap();
    assert_eq!((read.holder.as_str(), read.token, read.expires_ms), ("worker-a", a.token, 11_000));
    let renewed = state.acquire_lease("kit/deliver/0", "worker-a", 1_000, 10_500).await.unwrap().unwrap();
    assert_eq!(renewed.token, a.token);
    let b = state.acquire_lease("kit/deliver/0", "worker-b", 1_000, 12_000).await.unwrap().unwrap();
    assert!(b.token > a.token, "a new holder gets a higher token");
    let k2 = key(T1, 8, 2);
    let write = ClaimWrite { key: k2, expected: None, claim: inflight.clone() };
    let old = Fence { lease: a.name.clone(), token: a.token };
    assert!(matches!(state.put_claims(std::slice::from_ref(&write), Some(&old)).await, Err(Error::Fenced { .. })));
    assert_eq!(state.get_claims(&[k2]).await.unwrap(), vec![None], "a fenced write changes nothing");
    let current = Fence { lease: b.name.clone(), token: b.token };
    assert_eq!(state.put_claims(&[write], Some(&current)).await.unwrap(), vec![true]);
    state.release_lease(&a).await.unwrap();
    assert!(
        state.acquire_lease("kit/deliver/0", "worker-c", 1_000, 12_100).await.unwrap().is_none(),
        "a stale release is ignored"
    );
    state.release_lease(&b).await.unwrap();
    assert!(state.acquire_lease("kit/deliver/0", "worker-c", 1_000, 12_100).await.unwrap().is_some());
}

async fn tokens(state: &dyn SharedState) {
    // A new bucket starts empty and grants at its rate; refunds come back.
    let pace = Pace { rate_per_s: 200.0, burst: 20 };
    let first = state.take_tokens("kit-sender", pace, 100).await.unwrap();
    assert!(first.granted <= 1, "starts empty: {first:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = state.take_tokens("kit-sender", pace, 100).await.unwrap();
    assert!((10..=20).contains(&later.granted), "~20 tokens after 100 ms at 200/s (burst 20): {later:?}");
    assert!(later.wait > Duration::ZERO);
    state.refund_tokens("kit-sender", pace, 5).await.unwrap();
    assert!(state.take_tokens("kit-sender", pace, 5).await.unwrap().granted >= 5);
}

async fn idempotency(state: &Arc<dyn SharedState>) {
    let (lease, ttl) = (1_000, 10_000);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { state.reserve_idempotency(T1, "s", "k", "h1", 100, lease, ttl).await.unwrap() })
        })
        .collect();
    let mut reserved = 0;
    for t in tasks {
        match t.await.unwrap() {
            Reservation::Reserved => reserved += 1,
            Reservation::InProgress => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reserved, 1);
    let record = IdempotencyRecord { request_hash: "h1".into(), status: 201, body: b"{}".to_vec(), created_ms: 200 };
    state.complete_idempotency(T1, "s", "k", &record).await.unwrap();
    assert_eq!(
        state.reserve_idempotency(T1, "s", "k", "h1", 300, lease, ttl).await.unwrap(),
        Reservation::Replay(record)
    );
    assert_eq!(state.reserve_idempotency(T1, "s", "k", "h2", 300, lease, ttl).await.unwrap(), Reservation::Mismatch);
    assert_eq!(state.reserve_idempotency(T2, "s", "k", "h1", 300, lease, ttl).await.unwrap(), Reservation::Reserved);
    state.release_idempotency(T2, "s", "k").await.unwrap();
    assert_eq!(state.reserve_idempotency(T2, "s", "k", "h9", 400, lease, ttl).await.unwrap(), Reservation::Reserved);
    assert_eq!(
        state.reserve_idempotency(T2, "s", "k", "h9", 1_300, lease, ttl).await.unwrap(),
        Reservation::InProgress
    );
    assert_eq!(state.reserve_idempotency(T2, "s", "k", "h9", 1_401, lease, ttl).await.unwrap(), Reservation::Reserved);
    assert_eq!(state.reserve_idempotency(T1, "s", "k", "h2", 10_200, lease, ttl).await.unwrap(), Reservation::Reserved);
    assert_eq!(state.sweep_idempotency(50_000, ttl, 100).await.unwrap(), 2);
}

async fn quota_flags_and_stopped(state: &dyn SharedState) {
    let window = 10_000;
    assert_eq!(state.reserve_quota(T1, 100, window, 60, 1_000).await.unwrap().granted, 60);
    let g = state.reserve_quota(T1, 100, window, 60, 2_000).await.unwrap();
    assert_eq!(g.granted, 40);
    assert!(g.resume_at_ms.is_some());
    assert_eq!(state.reserve_quota(T2, 100, window, 60, 2_000).await.unwrap().granted, 60, "per tenant");
    state.set_quota_wait(T1, CampaignId(1), Some(99)).await.unwrap();
    assert_eq!(state.get_quota_wait(T1, CampaignId(1)).await.unwrap(), Some(99));
    state.set_quota_wait(T1, CampaignId(1), None).await.unwrap();
    assert_eq!(state.get_quota_wait(T1, CampaignId(1)).await.unwrap(), None);

    assert_eq!(state.campaign_status(T1, CampaignId(4)).await.unwrap(), None);
    state.publish_status(T1, CampaignId(4), CampaignStatus::Paused).await.unwrap();
    assert_eq!(state.campaign_status(T1, CampaignId(4)).await.unwrap(), Some(CampaignStatus::Paused));
    assert_eq!(state.campaign_status(T2, CampaignId(4)).await.unwrap(), None);

    state.stop_sender(T1, "whatsapp", "PN1").await.unwrap();
    state.stop_sender(T1, "sms", "+1202").await.unwrap();
    let mut stopped = state.stopped_senders(T1).await.unwrap();
    stopped.sort();
    assert_eq!(stopped, vec![("sms".to_string(), "+1202".to_string()), ("whatsapp".to_string(), "PN1".to_string())]);
    assert!(state.stopped_senders(T2).await.unwrap().is_empty());
    state.clear_stopped(T1, "whatsapp").await.unwrap();
    assert_eq!(state.stopped_senders(T1).await.unwrap().len(), 1);
}
