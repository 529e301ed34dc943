//! One tenant that waits never holds up another on its partition. The old engine worked each
//! partition one record at a time, so a paced, paused or quota-bound campaign stalled every
//! tenant hashed next to it. Here tenant 1 sends 10,000 messages at 1 msg/s, then pauses, then
//! waits for its WhatsApp messaging-tier quota; at each stage eight other tenants — one of them
//! on tenant 1's very partition — send 100 recipients each, and each completes within 5 s.

mod common;

use common::*;
use pipeline::topic::partition_for;
use serde_json::json;
use std::time::{Duration, Instant};

/// Sends a 100-recipient SMS campaign for each tenant at once; returns how long each took to
/// complete.
async fn send_all(s: &TestServer, tenants: &[(u64, String)], round: usize) -> Vec<(u64, Duration)> {
    let mut campaigns = Vec::new();
    for (i, (tenant, op)) in tenants.iter().enumerate() {
        campaigns.push((*tenant, op.clone(), campaign(s, op, 100, (round * 10 + i) * 1_000).await));
    }
    let runs = campaigns.iter().map(|(tenant, op, c)| async move {
        let started = Instant::now();
        s.ok("POST", &format!("/v1/campaigns/{c}/send"), op, None).await;
        s.wait_status(op, *c, "completed", Duration::from_secs(60)).await;
        (*tenant, started.elapsed())
    });
    futures::future::join_all(runs).await
}

fn check(stage: &str, neighbour: u64, took: &[(u64, Duration)]) {
    eprintln!("{stage}: {took:?}");
    for (tenant, d) in took {
        assert!(
            *d < Duration::from_secs(5),
            "{stage}: tenant {tenant} took {d:?} (tenant {neighbour} shares tenant 1's partition)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_tenant_never_holds_up_its_partition() {
    let s = TestServer::start().await;
    let partitions = pipeline::topics::PARTITIONS;
    let (slow, op1) = tenant(&s, "slow", Some(1)).await;
    let mut others: Vec<(u64, String)> = Vec::new();
    // Eight more tenants, at least one of them on tenant 1's partition.
    while others.len() < 8
        || !others.iter().any(|(t, _)| partition_for(*t, partitions) == partition_for(slow, partitions))
    {
        others.push(tenant(&s, &format!("t{}", others.len() + 2), None).await);
        assert!(others.len() < 64, "no tenant hashed to tenant 1's partition");
    }
    let neighbour =
        others.iter().find(|(t, _)| partition_for(*t, partitions) == partition_for(slow, partitions)).unwrap().0;
    let others: Vec<(u64, String)> = {
        let mut kept: Vec<(u64, String)> = others.iter().filter(|(t, _)| *t == neighbour).cloned().collect();
        kept.extend(others.iter().filter(|(t, _)| *t != neighbour).take(7).cloned());
        kept
    };
    assert_eq!(others.len(), 8);

    // 1. Tenant 1 paced at 1 msg/s with 10,000 to go.
    let paced = campaign(&s, &op1, 10_000, 900_000).await;
    s.ok("POST", &format!("/v1/campaigns/{paced}/send"), &op1, None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    check("paced", neighbour, &send_all(&s, &others, 1).await);
    let p = s.ok("GET", &format!("/v1/campaigns/{paced}/progress"), &op1, None).await;
    assert!(p["pending"].as_u64().unwrap() > 9_900, "tenant 1 is still pacing: {p}");

    // 2. Tenant 1 paused with 10,000 messages in the pipeline.
    s.ok("POST", &format!("/v1/campaigns/{paced}/pause"), &op1, None).await;
    check("paused", neighbour, &send_all(&s, &others, 2).await);

    // 3. Tenant 1 waiting for its messaging-tier quota (3 unique users a day).
    let admin = s.token("platform_admin", None);
    let wa = FakeProvider::whatsapp(|| format!("wamid.{}", rand_id())).await;
    put_whatsapp(&s, slow, &admin, &wa.url(), "PN-SLOW", 50, json!({"daily_unique_limit": 3})).await;
    let template = whatsapp_template(&s, &op1).await;
    let audience = audience_from(&s, &op1, 40, 800_000, false).await;
    let waiting = send(&s, &op1, template, audience).await;
    let p = eventually("tenant 1 waiting for quota", Duration::from_secs(30), || async {
        let p = s.ok("GET", &format!("/v1/campaigns/{waiting}/progress"), &op1, None).await;
        (p["status"] == "waiting_for_quota").then_some(p)
    })
    .await;
    assert!(p["resume_at_ms"].as_u64().is_some(), "{p}");
    check("waiting for quota", neighbour, &send_all(&s, &others, 3).await);
    assert_eq!(wa.calls(), 3, "tenant 1 sent exactly its quota");
    s.stop().await;
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
