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
