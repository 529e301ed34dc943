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
