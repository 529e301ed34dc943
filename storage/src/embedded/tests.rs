use super::*;
use crate::*;
use proptest::prelude::*;
use schemas::*;
use std::collections::BTreeMap;
use std::sync::Arc;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedStoreConfig::default()).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
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

#[test]
fn passes_the_store_kit() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(conformance::store(Arc::new(open(dir.path()))));
}

#[test]
fn its_shared_state_passes_the_state_kit() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let state = EmbeddedState::new(Arc::new(open(dir.path())));
        conformance::shared_state(Arc::new(state)).await;
    });
}

#[test]
fn claims_counters_and_ids_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = MessageId::derive(TenantId(1), CampaignId(1), RecipientId(1), Channel::Sms);
    let key = MessageKey { tenant: TenantId(1), campaign: CampaignId(1), bucket: 0, id };
    let claim = Claim::InFlight { attempt: 1, at_ms: 5 };
    rt().block_on(async {
        let store = Arc::new(open(dir.path()));
        let state = EmbeddedState::new(store.clone());
        let write = ClaimWrite { key, expected: None, claim: claim.clone() };
        assert_eq!(state.put_claims(&[write], None).await.unwrap(), vec![true]);
        assert_eq!(state.next_id("tenant").await.unwrap(), 1);
        let counters = CampaignCounters { total: Some(3), delivered: 2, ..Default::default() };
        store
            .apply(LogBatch { counters: vec![(TenantId(1), CampaignId(1), counters)], ..Default::default() })
            .await
            .unwrap();
    });
    rt().block_on(async {
        let store = Arc::new(open(dir.path()));
        let state = EmbeddedState::new(store.clone());
        assert_eq!(state.get_claims(&[key]).await.unwrap(), vec![Some(claim)]);
        assert_eq!(state.next_id("tenant").await.unwrap(), 2, "ids never repeat after a restart");
        let c = store.get_counters(TenantId(1), CampaignId(1)).await.unwrap().unwrap();
        assert_eq!((c.total, c.delivered), (Some(3), 2));
    });
}

/// Tenant 7's message to recipient `r` in campaign 2.
fn key(r: u64) -> MessageKey {
    MessageKey {
        tenant: TenantId(7),
        campaign: CampaignId(2),
        bucket: crate::bucket_of(RecipientId(r)),
        id: MessageId::derive(TenantId(7), CampaignId(2), RecipientId(r), Channel::WhatsApp),
    }
}

/// Writes what an older store held: `key` → `value` in its keyspace `name`.
fn older_store(dir: &Path, name: &str, key: Vec<u8>, value: Vec<u8>) {
    older_store_entries(dir, name, [(key, value)]);
}

fn older_store_entries(dir: &Path, name: &str, entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let old = db.keyspace(name, fjall::KeyspaceCreateOptions::default).unwrap();
    for (key, value) in entries {
        old.insert(key, value).unwrap();
    }
    db.persist(PersistMode::SyncAll).unwrap();
}

/// A store written before per-message keys were short: its rows and claims are moved to the
/// short-key keyspaces at open — read, listed and binding as before — and the old keyspaces
/// are deleted.
#[test]
fn rows_and_claims_of_an_older_store_move_to_short_keys() {
    let dir = tempfile::tempdir().unwrap();
    let done = Claim::Done { attempt: 1, outcome: OutcomeKind::Cancelled, letter: None, receipt: false };
    // Three buckets, and more entries than one batch of the move.
    let recipients: Vec<u64> = (0..25_000).collect();
    let row = |r: u64| (keys::message(&key(r)), codec::encode(&record(r, MessageStatus::Delivered)).unwrap());
    older_store_entries(dir.path(), LONG_KEY_MESSAGES, recipients.iter().map(|r| row(*r)));
    let claim = |r: u64| (keys::message(&key(r)), codec::encode(&done).unwrap());
    older_store_entries(dir.path(), LONG_KEY_CLAIMS, recipients.iter().map(|r| claim(*r)));
    rt().block_on(async {
        let store = Arc::new(open(dir.path()));
        assert!(!store.db.keyspace_exists(LONG_KEY_MESSAGES) && !store.db.keyspace_exists(LONG_KEY_CLAIMS));
        let some: Vec<MessageKey> = [0, 9_999, 10_000, 24_999].into_iter().map(key).collect();
        let rows = store.get_messages(&some).await.unwrap();
        let expected: Vec<_> =
            [0, 9_999, 10_000, 24_999].into_iter().map(|r| Some(record(r, MessageStatus::Delivered))).collect();
        assert_eq!(rows, expected);
        // Listed whole, in (bucket, id) order, each row under its full key.
        let (mut listed, mut after) = (Vec::new(), None);
        loop {
            let page = store.scan_messages(TenantId(7), CampaignId(2), after, 4_096).await.unwrap();
            let Some((last, _)) = page.last() else { break };
            after = Some((last.bucket, last.id));
            listed.extend(page);
        }
        let mut want: Vec<MessageKey> = recipients.iter().map(|r| key(*r)).collect();
        want.sort_by_key(|k| (k.bucket, k.id));
        assert_eq!(listed.iter().map(|(k, _)| *k).collect::<Vec<_>>(), want);
        assert!(listed.iter().all(|(k, row)| k.id == key(row.recipient.0).id));
        // The claims still bind: a fresh claim of a message settled before is refused.
        let state = EmbeddedState::new(store.clone());
        assert_eq!(state.get_claims(&[key(3)]).await.unwrap(), vec![Some(done.clone())]);
        let fresh = ClaimWrite { key: key(3), expected: None, claim: Claim::InFlight { attempt: 2, at_ms: 9 } };
        assert_eq!(state.put_claims(&[fresh], None).await.unwrap(), vec![false]);
        while !store.purge_tenant(TenantId(7), 10_000).await.unwrap() {}
        assert_eq!(store.messages.len().unwrap() + store.claims.len().unwrap(), 0, "purged under the short prefix");
    });
}

/// Two ids that share the 96 bits a short key keeps are refused, never confused.
#[test]
fn a_short_key_shared_by_two_ids_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = key(1);
    let b = MessageKey { id: MessageId(a.id.0 ^ 1), ..a };
    assert_eq!(keys::short_message(&a), keys::short_message(&b));
    rt().block_on(async {
        let store = open(dir.path());
        let write = LogWrite { key: a, record: record(1, MessageStatus::Sent), index: None };
        store.apply(LogBatch { writes: vec![write], ..Default::default() }).await.unwrap();
        assert_eq!(store.get_messages(&[a]).await.unwrap(), vec![Some(record(1, MessageStatus::Sent))]);
        let err = store.get_messages(&[b]).await.unwrap_err();
        assert!(matches!(err, crate::Error::KeyCollision { .. }), "{err}");
    });
}

/// A store written before claims were keyed by bucket: its claims stay binding (a campaign in
/// flight across the upgrade must not send twice), new writes go to the bucketed keyspace, a
/// purge removes the old ones, and the old keyspace is dropped at open once empty.
#[test]
fn claims_of_an_older_store_still_bind() {
    let dir = tempfile::tempdir().unwrap();
    let done = Claim::Done { attempt: 1, outcome: OutcomeKind::Cancelled, letter: None, receipt: false };
    // What such a store holds: claims under `(tenant, campaign, id)` in `claims`.
    older_store(dir.path(), LEGACY_CLAIMS, super::state::legacy_claim_key(&key(1)), codec::encode(&done).unwrap());
    rt().block_on(async {
        let store = Arc::new(open(dir.path()));
        assert!(store.legacy_claims.is_some());
        let state = EmbeddedState::new(store.clone());
        assert_eq!(state.get_claims(&[key(1), key(2)]).await.unwrap(), vec![Some(done.clone()), None]);
        let fresh = |k| ClaimWrite { key: k, expected: None, claim: Claim::InFlight { attempt: 1, at_ms: 9 } };
        // The old claim is what a fresh claim is compared with: it is refused.
        assert_eq!(state.put_claims(&[fresh(key(1)), fresh(key(2))], None).await.unwrap(), vec![false, true]);
        let settle =
            ClaimWrite { key: key(2), expected: Some(Claim::InFlight { attempt: 1, at_ms: 9 }), claim: done.clone() };
        assert_eq!(state.put_claims(&[settle], None).await.unwrap(), vec![true]);
        assert!(store.claims.contains_key(keys::short_message(&key(2))).unwrap());
        assert_eq!(store.legacy_claims.as_ref().unwrap().len().unwrap(), 1, "the old keyspace is never written");
        while !store.purge_tenant(TenantId(7), 1_000).await.unwrap() {}
        assert_eq!(state.get_claims(&[key(1), key(2)]).await.unwrap(), vec![None, None]);
    });
    let store = open(dir.path());
    assert!(store.legacy_claims.is_none(), "an empty old keyspace is dropped");
    assert!(!store.db.keyspace_exists(LEGACY_CLAIMS));
}

/// A store written before the provider-id index was hashed: its entries still resolve (a
/// receipt for a message sent before the upgrade), new ones go to the hashed keyspace, an entry
/// whose check does not match is not taken, a purge removes both, and the old keyspace is
/// dropped at open once empty.
#[test]
fn provider_ids_of_an_older_store_still_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let old_key = super::log::legacy_provider_key(TenantId(7), "whatsapp", "wamid.old");
    older_store(dir.path(), LEGACY_PROVIDER_IDS, old_key, codec::encode(&key(1)).unwrap());
    rt().block_on(async {
        let store = open(dir.path());
        assert!(store.legacy_provider_ids.is_some());
        let write = LogWrite {
            key: key(2),
            record: record(2, MessageStatus::Sent),
            index: Some(("whatsapp".into(), "wamid.new".into())),
        };
        store.apply(LogBatch { writes: vec![write], ..Default::default() }).await.unwrap();
        let ids = ["wamid.old", "wamid.new", "wamid.none"];
        assert_eq!(
            store.lookup_provider_ids(TenantId(7), "whatsapp", &ids).await.unwrap(),
            vec![Some(key(1)), Some(key(2)), None]
        );
        assert_eq!(store.legacy_provider_ids.as_ref().unwrap().len().unwrap(), 1, "never written");
        assert_eq!(store.lookup_provider_ids(TenantId(8), "whatsapp", &ids).await.unwrap(), vec![None, None, None]);
        // The same 96 bits with another check: another provider id, never taken for this one.
        let (index_key, check) = super::log::provider_key(TenantId(7), "whatsapp", "wamid.new");
        let forged = super::log::ProviderIdEntry { key: key(3), check: check ^ 1 };
        store.provider_ids.insert(index_key, codec::encode(&forged).unwrap()).unwrap();
        assert_eq!(store.lookup_provider_ids(TenantId(7), "whatsapp", &["wamid.new"]).await.unwrap(), vec![None]);
        while !store.purge_tenant(TenantId(7), 1_000).await.unwrap() {}
        assert_eq!(store.lookup_provider_ids(TenantId(7), "whatsapp", &ids).await.unwrap(), vec![None, None, None]);
    });
    let store = open(dir.path());
    assert!(store.legacy_provider_ids.is_none(), "an empty old keyspace is dropped");
    assert!(!store.db.keyspace_exists(LEGACY_PROVIDER_IDS));
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

/// The presence sets (`presence.rs`) answer "absent" without reading the store: what was written
/// before, in this process or before a reopen, must still be found, and a claim from absent
/// must still be refused when one exists.
#[test]
fn rows_and_claims_are_found_whatever_the_presence_sets_held() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: u64| MessageKey {
        tenant: TenantId(1),
        campaign: CampaignId(1),
        bucket: (i / 3) as u32,
        id: MessageId::derive(TenantId(1), CampaignId(1), RecipientId(i), Channel::Sms),
    };
    let in_flight =
        |i: u64| ClaimWrite { key: key(i), expected: None, claim: Claim::InFlight { attempt: 1, at_ms: i } };
    let rows = |range: std::ops::Range<u64>| LogBatch {
        writes: range.map(|i| LogWrite { key: key(i), record: record(i, MessageStatus::Sent), index: None }).collect(),
        ..Default::default()
    };
    rt().block_on(async {
        let store = Arc::new(open(dir.path()));
        let state = EmbeddedState::new(store.clone());
        // Buckets 0 and 1 are loaded empty, then written.
        assert_eq!(store.get_messages(&[key(0), key(3)]).await.unwrap(), vec![None, None]);
        assert_eq!(state.get_claims(&[key(0), key(3)]).await.unwrap(), vec![None, None]);
        store.apply(rows(0..4)).await.unwrap();
        assert_eq!(state.put_claims(&[in_flight(0), in_flight(3)], None).await.unwrap(), vec![true, true]);
        let found = store.get_messages(&[key(0), key(3), key(4)]).await.unwrap();
        assert_eq!(found.iter().map(Option::is_some).collect::<Vec<_>>(), vec![true, true, false]);
        assert_eq!(state.put_claims(&[in_flight(0), in_flight(1)], None).await.unwrap(), vec![false, true]);
    });
    rt().block_on(async {
        // A fresh process loads the buckets from the store.
        let store = Arc::new(open(dir.path()));
        let state = EmbeddedState::new(store.clone());
        let found = store.get_messages(&[key(1), key(2), key(3), key(5)]).await.unwrap();
        assert_eq!(found.iter().map(Option::is_some).collect::<Vec<_>>(), vec![true, true, true, false]);
        let claims = state.get_claims(&[key(0), key(1), key(2), key(3)]).await.unwrap();
        assert_eq!(claims.iter().map(Option::is_some).collect::<Vec<_>>(), vec![true, true, false, true]);
        assert_eq!(state.put_claims(&[in_flight(3), in_flight(2)], None).await.unwrap(), vec![false, true]);
    });
}

/// In-flight claims live in group rows (`inflight.rs`): after settles, a re-claim and a reopen,
/// every claim reads back exactly as last written, and a purge takes only its tenant's groups.
#[test]
fn in_flight_claims_read_back_exactly_across_settles_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let other = MessageKey { tenant: TenantId(8), ..key(1) };
    let flight = |attempt: u32| Claim::InFlight { attempt, at_ms: 1 };
    let retrying = Claim::Retrying { attempt: 1, due_ms: 5 };
    let done = Claim::Done { attempt: 1, outcome: OutcomeKind::Cancelled, letter: None, receipt: false };
    let cas = |k: MessageKey, expected: Option<Claim>, claim: Claim| ClaimWrite { key: k, expected, claim };
    let claims = |state: &EmbeddedState| {
        let keys: Vec<MessageKey> = (0..8).map(key).chain([other]).collect();
        rt().block_on(state.get_claims(&keys)).unwrap()
    };
    let expected = vec![
        Some(retrying.clone()),
        Some(retrying.clone()),
        Some(flight(2)),
        Some(flight(1)),
        Some(flight(1)),
        Some(done.clone()),
        Some(flight(1)),
        None,
        Some(flight(1)),
    ];
    {
        let store = Arc::new(open(dir.path()));
        let state = EmbeddedState::new(store.clone());
        let first: Vec<ClaimWrite> = (0..5).map(|r| cas(key(r), None, flight(1))).collect();
        rt().block_on(state.put_claims(&first, None)).unwrap();
        let second: Vec<ClaimWrite> =
            (5..7).map(|r| cas(key(r), None, flight(1))).chain([cas(other, None, flight(1))]).collect();
        rt().block_on(state.put_claims(&second, None)).unwrap();
        let settle = [
            cas(key(0), Some(flight(1)), retrying.clone()),
            cas(key(1), Some(flight(1)), retrying.clone()),
            cas(key(5), Some(flight(1)), done.clone()),
            cas(key(2), Some(flight(1)), flight(2)),
            cas(key(3), None, flight(1)),
        ];
        assert_eq!(rt().block_on(state.put_claims(&settle, None)).unwrap(), vec![true, true, true, true, false]);
        assert_eq!(claims(&state), expected);
    }
    let store = Arc::new(open(dir.path()));
    let state = EmbeddedState::new(store.clone());
    assert_eq!(claims(&state), expected, "the same after a reopen");
    let stale = [cas(key(2), Some(flight(1)), done.clone()), cas(key(0), Some(flight(1)), done.clone())];
    assert_eq!(rt().block_on(state.put_claims(&stale, None)).unwrap(), vec![false, false]);
    assert!(rt().block_on(store.purge_tenant(TenantId(7), usize::MAX)).unwrap());
    assert_eq!(claims(&state), [vec![None; 8], vec![Some(flight(1))]].concat(), "the other tenant keeps its claim");
    let last = [cas(other, Some(flight(1)), done.clone())];
    assert_eq!(rt().block_on(state.put_claims(&last, None)).unwrap(), vec![true]);
    assert!(store.inflight.first_key_value().is_none(), "no group row is left once nothing is in flight");
}
