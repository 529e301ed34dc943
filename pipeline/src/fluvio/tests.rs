//! `FluvioTopics` against a real Fluvio cluster, when one is reachable: the topic contract's
//! conformance kit, a million records read back without a gap, and re-seeking past a skip.
//!
//! Set `HERALD_TEST_FLUVIO=host:port` (the SC's public address). Without it these tests skip
//! with a loud line, in CI too: no Fluvio server can be installed there.

use super::{FluvioTopics, FluvioTopicsConfig};
use crate::topic::{ProducerRecord, TopicBackend, TopicSpec};
use schemas::envelope::Headers;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn endpoint(guarantee: &str) -> Option<String> {
    match std::env::var("HERALD_TEST_FLUVIO") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            eprintln!(
                "\n!!! SKIPPED: HERALD_TEST_FLUVIO is not set, so no Fluvio cluster was reached. \
                 Unchecked here: {guarantee}.\n"
            );
            None
        }
    }
}

/// A config whose topic and group names no other run shares.
fn config(endpoint: String) -> FluvioTopicsConfig {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    FluvioTopicsConfig {
        endpoint,
        prefix: format!("t{}x{}-", std::process::id(), nanos % 1_000_000_000),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluvio_topics_pass_the_topic_backend_kit() {
    let Some(endpoint) = endpoint("the topic backend contract on Fluvio (placement, offsets, headers, group offsets)")
    else {
        return;
    };
    let topics = FluvioTopics::connect(config(endpoint), crate::conformance::specs()).await.unwrap();
    let backend: Arc<dyn TopicBackend> = Arc::new(topics);
    crate::conformance::topic_backend(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_records_come_back_contiguous() {
    let Some(endpoint) = endpoint("a 1,000,000-record Fluvio round trip with no record lost") else { return };
    const TOTAL: u64 = 1_000_000;
    let spec = TopicSpec::new("million", 1, None);
    let topics = FluvioTopics::connect(config(endpoint), vec![spec]).await.unwrap();
    let started = Instant::now();
    let mut headers = Headers::new();
    headers.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    for first in (0..TOTAL).step_by(20_000) {
        let records = (first..first + 20_000)
            .map(|i| ProducerRecord {
                topic: "million",
                partition: 0,
                key: i,
                headers: headers.clone(),
                value: i.to_le_bytes().to_vec(),
            })
            .collect();
        let offsets = topics.produce(records).await.unwrap();
        assert_eq!(offsets.first(), Some(&first), "offsets are dense from 0");
    }
    let produced = started.elapsed();
    let mut next = 0u64;
    while next < TOTAL {
        let got = topics.fetch("million", 0, next, 50_000, Duration::from_secs(10)).await.unwrap();
        assert!(!got.is_empty(), "no record at {next} within 10 s");
        for r in got {
            assert_eq!((r.offset, r.key), (next, next), "contiguous");
            assert_eq!(r.value, next.to_le_bytes().to_vec());
            next += 1;
        }
    }
    assert_eq!(topics.end_offset("million", 0).await.unwrap(), TOTAL);
    eprintln!(
        "1,000,000 records: produced in {produced:?}, read back in {:?}, {} re-seeks after client skips",
        started.elapsed() - produced,
        topics.reseeks()
    );
}
