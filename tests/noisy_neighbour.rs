//! One tenant that waits never holds up another on its partition. The old engine worked each
//! partition one record at a time, so a paced, paused or quota-bound campaign stalled every
//! tenant hashed next to it. Here tenant 1 sends 10,000 messages at 1 msg/s, then pauses, then
//! waits for its WhatsApp messaging-tier quota; at each stage eight other tenants — among them
//! one on tenant 1's throttle partition and one on its deliver partition — send 100 recipients each, and each completes within 5 s.

mod common;

use common::*;
use pipeline::topic::partition_for;
use pipeline::topics;
use schemas::{Channel, TenantId};
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

fn check(stage: &str, neighbours: [u64; 2], took: &[(u64, Duration)]) {
    eprintln!("{stage}: {took:?}");
    for (tenant, d) in took {
        assert!(
            *d < Duration::from_secs(5),
            "{stage}: tenant {tenant} took {d:?} (tenants {neighbours:?} share tenant 1's throttle and deliver partitions)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_tenant_never_holds_up_its_partition() {
    let s = TestServer::start().await;
    // Eight more tenants: at least one on tenant 1's throttle partition (keyed by tenant) and
    // one on its deliver partition (keyed by route: tenant and channel).
    let throttle_of = |t: u64| partition_for(topics::tenant_key(TenantId(t)), topics::RENDERED.spec.partitions());
    let deliver_of =
        |t: u64| partition_for(topics::route_key(TenantId(t), Channel::Sms), topics::READY.spec.partitions());
    let (slow, op1) = tenant(&s, "slow", Some(1)).await;
    let mut others: Vec<(u64, String)> = Vec::new();
    let find = |others: &[(u64, String)], of: &dyn Fn(u64) -> u32| {
        others.iter().find(|(t, _)| of(*t) == of(slow)).map(|o| o.0)
    };
    while others.len() < 8 || find(&others, &throttle_of).is_none() || find(&others, &deliver_of).is_none() {
        others.push(tenant(&s, &format!("t{}", others.len() + 2), None).await);
        assert!(others.len() < 64, "no tenant hashed to tenant 1's partitions");
    }
    let neighbours = [find(&others, &throttle_of).unwrap(), find(&others, &deliver_of).unwrap()];
    let others: Vec<(u64, String)> = {
        let mut kept: Vec<(u64, String)> = others.iter().filter(|(t, _)| neighbours.contains(t)).cloned().collect();
        let room = 8 - kept.len();
        kept.extend(others.iter().filter(|(t, _)| !neighbours.contains(t)).take(room).cloned());
        kept
    };
    assert_eq!(others.len(), 8);

    // 1. Tenant 1 paced at 1 msg/s with 10,000 to go.
    let paced = campaign(&s, &op1, 10_000, 900_000).await;
    s.ok("POST", &format!("/v1/campaigns/{paced}/send"), &op1, None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    check("paced", neighbours, &send_all(&s, &others, 1).await);
    let p = s.ok("GET", &format!("/v1/campaigns/{paced}/progress"), &op1, None).await;
    assert!(p["pending"].as_u64().unwrap() > 9_900, "tenant 1 is still pacing: {p}");

    // 2. Tenant 1 paused with 10,000 messages in the pipeline.
    s.ok("POST", &format!("/v1/campaigns/{paced}/pause"), &op1, None).await;
    check("paused", neighbours, &send_all(&s, &others, 2).await);

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
    check("waiting for quota", neighbours, &send_all(&s, &others, 3).await);
    assert_eq!(wa.calls(), 3, "tenant 1 sent exactly its quota");
    s.stop().await;
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
