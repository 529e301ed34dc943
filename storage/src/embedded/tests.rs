use super::*;
use crate::*;
use proptest::prelude::*;
use schemas::*;
use std::collections::BTreeMap;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedStoreConfig::default()).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn record(i: u64, status: MessageStatus) -> MessageRecord {
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

async fn audience(store: &EmbeddedStore, tenant: TenantId) -> AudienceId {
    let id = AudienceId(store.next_id("audience").await.unwrap());
    let a = Audience { id, tenant, name: "a".into(), recipient_count: 0, next_recipient_id: 0, created_ms: 0 };
    store.put_audience(&a).await.unwrap();
    id
}

#[test]
fn recipients_span_buckets_dedupe_and_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = open(dir.path());
        let t = TenantId(1);
        let a = audience(&store, t).await;
        let n = BUCKET_SIZE + 500;
        let mut rows: Vec<NewRecipient> =
            (0..n).map(|i| NewRecipient { address: format!("+1555{i:07}"), attrs: vec![] }).collect();
        rows.push(rows[3].clone()); // duplicate within the call
        let added = store.add_recipients(t, a, rows).await.unwrap();
        assert_eq!(added, AddedRecipients { added: n, duplicates: 1 });
        // duplicate across calls
        let again = vec![NewRecipient { address: "+15550000007".into(), attrs: vec![] }];
        assert_eq!(store.add_recipients(t, a, again).await.unwrap().duplicates, 1);
        assert_eq!(store.get_audience(t, a).await.unwrap().unwrap().recipient_count, n);

        // Read the whole audience in pages; ids are dense and ordered across the bucket edge.
        let mut from = RecipientId(0);
        let mut seen = 0u64;
        loop {
            let page = store.read_recipients(t, a, from, 777).await.unwrap();
            if page.is_empty() {
                break;
            }
            for r in &page {
                assert_eq!(r.id.0, seen);
                assert_eq!(r.bucket, bucket_of(r.id));
                seen += 1;
            }
            from = RecipientId(page.last().unwrap().id.0 + 1);
        }
        assert_eq!(seen, n);
        // Another tenant's audience with the same id reads as empty.
        assert!(store.read_recipients(TenantId(2), a, RecipientId(0), 10).await.unwrap().is_empty());
    });
}

#[test]
fn claims_and_counters_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = MessageId::derive(TenantId(1), CampaignId(1), RecipientId(1), Channel::Sms);
    let id = MessageKey { tenant: TenantId(1), campaign: CampaignId(1), bucket: 0, id };
    rt().block_on(async {
        let store = open(dir.path());
        store.put_claims(&[(id, Claim::InFlight { attempt: 1, at_ms: 5 })]).await.unwrap();
        let counters = CampaignCounters { total: Some(3), delivered: 2, ..Default::default() };
        store
            .apply(LogBatch { counters: vec![(TenantId(1), CampaignId(1), counters)], ..Default::default() })
            .await
            .unwrap();
    });
    rt().block_on(async {
        let store = open(dir.path());
        assert_eq!(store.get_claims(&[id]).await.unwrap(), vec![Some(Claim::InFlight { attempt: 1, at_ms: 5 })]);
        let c = store.get_counters(TenantId(1), CampaignId(1)).await.unwrap().unwrap();
        assert_eq!((c.total, c.delivered), (Some(3), 2));
    });
}

#[test]
fn suppressions_are_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = open(dir.path());
        assert_eq!(store.suppressed(TenantId(1), &["a@x.io"]).await.unwrap(), vec![false]);
        store.put_suppression(TenantId(1), "a@x.io").await.unwrap();
        assert_eq!(store.suppressed(TenantId(1), &["a@x.io", "b@x.io"]).await.unwrap(), vec![true, false]);
        assert_eq!(store.suppressed(TenantId(2), &["a@x.io"]).await.unwrap(), vec![false]);
        assert!(store.remove_suppression(TenantId(1), "a@x.io").await.unwrap());
        assert_eq!(store.suppressed(TenantId(1), &["a@x.io"]).await.unwrap(), vec![false]);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The message log against a BTreeMap oracle: last write wins, scans are ordered by
    /// (bucket, id), stay inside their campaign, and page without gaps or repeats.
    #[test]
    fn message_log_matches_oracle(ops in proptest::collection::vec((0u64..3, 0u32..4, 0u64..40, 0usize..8), 1..120),
                                  page in 1usize..9) {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = open(dir.path());
            let mut oracle: BTreeMap<(u64, u32, u128), MessageRecord> = BTreeMap::new();
            for chunk in ops.chunks(7) {
                let mut batch = LogBatch::default();
                for &(campaign, bucket, r, status) in chunk {
                    let key = MessageKey {
                        tenant: TenantId(1),
                        campaign: CampaignId(campaign),
                        bucket,
                        id: MessageId::derive(TenantId(1), CampaignId(campaign), RecipientId(r), Channel::Sms),
                    };
                    let rec = record(r, MessageStatus::ALL[status]);
                    batch.writes.retain(|w: &LogWrite| w.key != key);
                    batch.writes.push(LogWrite { key, record: rec.clone(), index: None });
                    oracle.insert((campaign, bucket, key.id.0), rec);
                }
                store.apply(batch).await.unwrap();
            }
            for campaign in 0..3u64 {
                let expected: Vec<_> = oracle.range((campaign, 0, 0)..(campaign + 1, 0, 0)).map(|(_, v)| v.clone()).collect();
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let rows = store.scan_messages(TenantId(1), CampaignId(campaign), after, page).await.unwrap();
                    if rows.is_empty() { break; }
                    after = rows.last().map(|(k, _)| (k.bucket, k.id));
                    got.extend(rows.into_iter().map(|(_, r)| r));
                }
                prop_assert_eq!(got, expected);
            }
            Ok(())
        })?;
    }
}

fn tenant_row(id: u64) -> Tenant {
    Tenant {
        id: TenantId(id),
        name: format!("t{id}"),
        rate_limit_per_s: Some(100),
        burst: 10,
        weight: 1,
        created_ms: 0,
        state: TenantState::Active,
    }
}

#[test]
fn tenant_limits_out_of_bounds_are_refused_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = open(dir.path());
        store.put_tenant(&tenant_row(1)).await.unwrap();
        for (bad, code) in [
            (Tenant { rate_limit_per_s: Some(0), ..tenant_row(1) }, "invalid_rate_limit"),
            (Tenant { burst: 1_001, ..tenant_row(1) }, "invalid_burst"),
            (Tenant { rate_limit_per_s: None, burst: 100_001, ..tenant_row(1) }, "invalid_burst"),
            (Tenant { rate_limit_per_s: Some(50_000), burst: 100_001, ..tenant_row(1) }, "invalid_burst"),
            (Tenant { weight: 0, ..tenant_row(1) }, "invalid_weight"),
            (Tenant { weight: 1_001, ..tenant_row(1) }, "invalid_weight"),
        ] {
            let err = store.put_tenant(&bad).await.unwrap_err();
            assert!(matches!(err, crate::Error::Invalid { code: c, .. } if c == code), "{bad:?}: {err}");
        }
        assert_eq!(store.get_tenant(TenantId(1)).await.unwrap(), Some(tenant_row(1)), "nothing applied");
        let unlimited = Tenant { rate_limit_per_s: None, burst: 100_000, weight: 1_000, ..tenant_row(1) };
        store.put_tenant(&unlimited).await.unwrap();
    });
}

fn campaign_row(version: u64, status: CampaignStatus) -> Campaign {
    Campaign {
        id: CampaignId(1),
        tenant: TenantId(1),
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

#[test]
fn campaign_updates_are_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    rt.block_on(async {
        store.put_campaign(&campaign_row(0, CampaignStatus::Running)).await.unwrap();
        // Sixteen writers race from the same read; exactly one wins.
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let status = if i % 2 == 0 { CampaignStatus::Paused } else { CampaignStatus::Cancelled };
                tokio::spawn(async move { store.update_campaign(&campaign_row(0, status), 0).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += u32::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
        let stored = store.get_campaign(TenantId(1), CampaignId(1)).await.unwrap().unwrap();
        assert_eq!(stored.version, 1);
        assert!(!store.update_campaign(&campaign_row(0, CampaignStatus::Running), 0).await.unwrap(), "stale");
        assert!(store.update_campaign(&campaign_row(1, CampaignStatus::Running), 1).await.unwrap());
        let missing = Campaign { id: CampaignId(9), ..campaign_row(0, CampaignStatus::Running) };
        assert!(!store.update_campaign(&missing, 0).await.unwrap(), "no update creates a campaign");
    });
}

#[test]
fn idempotency_reservations_are_exclusive_then_replay_then_expire() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let (t, lease, ttl) = (TenantId(1), 1_000, 10_000);
    rt.block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.reserve_idempotency(t, "s", "k", "h1", 100, lease, ttl).await.unwrap() },
                )
            })
            .collect();
        let mut reserved = 0;
        for task in tasks {
            match task.await.unwrap() {
                Reservation::Reserved => reserved += 1,
                Reservation::InProgress => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(reserved, 1);
        let record =
            IdempotencyRecord { request_hash: "h1".into(), status: 201, body: b"{}".to_vec(), created_ms: 200 };
        store.complete_idempotency(t, "s", "k", &record).await.unwrap();
        assert_eq!(
            store.reserve_idempotency(t, "s", "k", "h1", 300, lease, ttl).await.unwrap(),
            Reservation::Replay(record)
        );
        assert_eq!(store.reserve_idempotency(t, "s", "k", "h2", 300, lease, ttl).await.unwrap(), Reservation::Mismatch);
        // Scoped by tenant and scope.
        assert_eq!(
            store.reserve_idempotency(TenantId(2), "s", "k", "h1", 300, lease, ttl).await.unwrap(),
            Reservation::Reserved
        );
        // A released reservation frees the key; a lapsed one too.
        store.release_idempotency(TenantId(2), "s", "k").await.unwrap();
        assert_eq!(
            store.reserve_idempotency(TenantId(2), "s", "k", "h9", 400, lease, ttl).await.unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            store.reserve_idempotency(TenantId(2), "s", "k", "h9", 1_300, lease, ttl).await.unwrap(),
            Reservation::InProgress
        );
        assert_eq!(
            store.reserve_idempotency(TenantId(2), "s", "k", "h9", 1_401, lease, ttl).await.unwrap(),
            Reservation::Reserved
        );
        // Records expire after the TTL, and the sweep removes them.
        assert_eq!(
            store.reserve_idempotency(t, "s", "k", "h2", 10_200, lease, ttl).await.unwrap(),
            Reservation::Reserved
        );
        assert_eq!(store.sweep_idempotency(50_000, ttl, 100).await.unwrap(), 2);
    });
}

#[test]
fn purge_removes_every_row_of_one_tenant_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = open(dir.path());
        for t in [1, 2] {
            let tenant = TenantId(t);
            store.put_tenant(&tenant_row(t)).await.unwrap();
            let a = audience(&store, tenant).await;
            let rows = (0..50).map(|i| NewRecipient { address: format!("+1555{i:07}"), attrs: vec![] }).collect();
            store.add_recipients(tenant, a, rows).await.unwrap();
            store.put_suppression(tenant, "+15550000001").await.unwrap();
            store.put_campaign(&Campaign { tenant, ..campaign_row(0, CampaignStatus::Running) }).await.unwrap();
            let key = MessageKey { tenant, campaign: CampaignId(1), bucket: 0, id: MessageId(u128::from(t)) };
            let write =
                LogWrite { key, record: record(1, MessageStatus::Sent), index: Some(("sim".into(), "p1".into())) };
            let counters = vec![(tenant, CampaignId(1), CampaignCounters::default())];
            store.apply(LogBatch { writes: vec![write], counters, ..Default::default() }).await.unwrap();
            store.put_claims(&[(key, Claim::Retrying { attempt: 1 })]).await.unwrap();
            store.reserve_idempotency(tenant, "s", "k", "h", 0, 10, 10).await.unwrap();
            store.reserve_quota(tenant, 10, 1_000, 1, 0).await.unwrap();
        }
        // A small budget: the purge proceeds in steps.
        let mut steps = 0;
        while !store.purge_tenant(TenantId(1), 16).await.unwrap() {
            steps += 1;
            assert!(steps < 100);
        }
        assert!(steps > 1);
        let t1 = TenantId(1);
        assert!(store.list_campaigns(t1).await.unwrap().is_empty());
        assert!(store.list_audiences(t1).await.unwrap().is_empty());
        assert!(store.read_recipients(t1, AudienceId(1), RecipientId(0), 10).await.unwrap().is_empty());
        assert!(store.list_suppressions(t1, None, 10).await.unwrap().is_empty());
        assert!(store.scan_messages(t1, CampaignId(1), None, 10).await.unwrap().is_empty());
        assert_eq!(store.lookup_provider_ids(t1, "sim", &["p1"]).await.unwrap(), vec![None]);
        assert!(store.get_counters(t1, CampaignId(1)).await.unwrap().is_none());
        assert_eq!(store.get_tenant(t1).await.unwrap().map(|t| t.id), Some(t1), "the tenant row stays");
        // Tenant 2 is untouched.
        let t2 = TenantId(2);
        assert_eq!(store.list_campaigns(t2).await.unwrap().len(), 1);
        assert_eq!(store.read_recipients(t2, AudienceId(2), RecipientId(0), 100).await.unwrap().len(), 50);
        let key2 = MessageKey { tenant: t2, campaign: CampaignId(1), bucket: 0, id: MessageId(2) };
        assert_eq!(store.lookup_provider_ids(t2, "sim", &["p1"]).await.unwrap(), vec![Some(key2)]);
        assert!(store.get_claims(&[key2]).await.unwrap()[0].is_some());
    });
}

#[test]
fn the_provider_id_index_is_scoped_by_tenant() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = open(dir.path());
        let key = |t: u64| MessageKey {
            tenant: TenantId(t),
            campaign: CampaignId(1),
            bucket: 0,
            id: MessageId(u128::from(t)),
        };
        // Both tenants' providers answered with the same id (a hostile base_url can choose ids).
        for t in [1, 2] {
            let write = LogWrite {
                key: key(t),
                record: record(1, MessageStatus::Sent),
                index: Some(("whatsapp".into(), "wamid.X".into())),
            };
            store.apply(LogBatch { writes: vec![write], ..Default::default() }).await.unwrap();
        }
        assert_eq!(store.lookup_provider_ids(TenantId(1), "whatsapp", &["wamid.X"]).await.unwrap(), vec![Some(key(1))]);
        assert_eq!(store.lookup_provider_ids(TenantId(2), "whatsapp", &["wamid.X"]).await.unwrap(), vec![Some(key(2))]);
        assert_eq!(store.lookup_provider_ids(TenantId(3), "whatsapp", &["wamid.X"]).await.unwrap(), vec![None]);
    });
}
