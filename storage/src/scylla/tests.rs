//! `ScyllaStore` against a real CQL server, when one is reachable: the store conformance kit,
//! migrations applied once and idempotent.
//!
//! Set `HERALD_TEST_SCYLLA=host:port`. Without it these tests skip with a loud line, in CI too:
//! no CQL server can be installed there.

use super::{migrate, ScyllaConfig, ScyllaStore, MIGRATIONS};
use crate::Store;
use std::sync::Arc;

fn config(guarantee: &str) -> Option<ScyllaConfig> {
    match std::env::var("HERALD_TEST_SCYLLA") {
        Ok(node) if !node.is_empty() => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            Some(ScyllaConfig {
                nodes: vec![node],
                keyspace: format!("t{}x{}", std::process::id(), nanos % 1_000_000_000),
                replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
                consistency: scylla::statement::Consistency::One,
                // Test servers such as kassandra cannot answer the agreement queries; set
                // HERALD_TEST_SCYLLA_AGREEMENT=1 against a real cluster.
                schema_agreement: std::env::var("HERALD_TEST_SCYLLA_AGREEMENT").is_ok_and(|v| v == "1"),
                ..Default::default()
            })
        }
        _ => {
            eprintln!(
                "\n!!! SKIPPED: HERALD_TEST_SCYLLA is not set, so no CQL server was reached. Unchecked here: {guarantee}.\n"
            );
            None
        }
    }
}

#[tokio::test]
async fn migrations_apply_once_and_are_idempotent() {
    let Some(config) = config("the CQL schema applies and re-applies cleanly") else { return };
    let first = migrate(&config).await.unwrap();
    assert_eq!(first, MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
    assert!(migrate(&config).await.unwrap().is_empty(), "a second run applies nothing");
    ScyllaStore::connect(config).await.unwrap().ping().await.unwrap();
}

#[tokio::test]
async fn a_keyspace_without_the_schema_is_refused() {
    let Some(mut config) = config("connecting refuses an unmigrated keyspace") else { return };
    config.keyspace.push_str("none");
    let e = ScyllaStore::connect(config).await.err().expect("refused");
    assert!(e.to_string().contains("migrate"), "{e}");
}

#[tokio::test]
async fn scylla_store_passes_the_store_kit() {
    let Some(config) = config("the store contract on CQL (catalog, audiences, message log, counters, DLQ)") else {
        return;
    };
    migrate(&config).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(ScyllaStore::connect(config).await.unwrap());
    crate::conformance::store(store).await;
}

#[tokio::test]
async fn scylla_held_records_pass_the_held_store_kit() {
    let Some(config) = config("the runners' held store on CQL (lanes, order, release)") else { return };
    migrate(&config).await.unwrap();
    let store = ScyllaStore::connect(config).await.unwrap();
    pipeline::conformance::held_store(&store).await;
}

#[tokio::test]
async fn a_log_write_cut_short_is_finished_by_settle() {
    use crate::conformance::{key, record};
    use crate::{CampaignCounters, LogBatch, LogWrite, MessageLog, MessageStatus};
    use schemas::{CampaignId, TenantId};
    let Some(config) = config("a message-log write cut short after its rows is finished in full (exact counters)")
    else {
        return;
    };
    migrate(&config).await.unwrap();
    let store = ScyllaStore::connect(config).await.unwrap();
    let (t, c) = (TenantId(1), CampaignId(7));
    let writes: Vec<LogWrite> = (1..=20)
        .map(|i| LogWrite {
            key: key(t, 7, i),
            record: record(i, MessageStatus::Sent),
            index: Some(("whatsapp".into(), format!("wamid.{i}"))),
        })
        .collect();
    let counters = CampaignCounters { total: Some(20), sent: 20, ..Default::default() };
    let batch = LogBatch { writes, counters: vec![(t, c, counters)], at_ms: 10_000, ..Default::default() };
    // A crash right after the rows: rows ahead of the counters, no index entries.
    store.apply_until_rows(batch).await.unwrap();
    assert!(store.get_counters(t, c).await.unwrap().is_none());
    assert_eq!(store.lookup_provider_ids(t, "whatsapp", &["wamid.3"]).await.unwrap(), vec![None]);
    store.settle(t, c).await.unwrap();
    assert_eq!(store.get_counters(t, c).await.unwrap(), Some(counters));
    assert_eq!(store.lookup_provider_ids(t, "whatsapp", &["wamid.3"]).await.unwrap(), vec![Some(key(t, 7, 3))]);
    assert_eq!(store.get_timeline(t, c, None, 10).await.unwrap(), vec![(10_000, counters)]);
    // Settled once: a later write is not undone by settling again.
    let newer = CampaignCounters { total: Some(20), sent: 19, delivered: 1, ..Default::default() };
    let write = LogWrite { key: key(t, 7, 1), record: record(1, MessageStatus::Delivered), index: None };
    store.apply(LogBatch { writes: vec![write], counters: vec![(t, c, newer)], ..Default::default() }).await.unwrap();
    store.settle(t, c).await.unwrap();
    assert_eq!(store.get_counters(t, c).await.unwrap(), Some(newer));
    let row = store.get_messages(&[key(t, 7, 1)]).await.unwrap().remove(0).unwrap();
    assert_eq!(row.status, MessageStatus::Delivered);
}
