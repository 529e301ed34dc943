//! `RedisState` against a real `redis-server` (started by the test; see
//! `crate::testing::servers`).

use super::*;
use crate::conformance;
use crate::model::Claim;
use crate::state::{ClaimWrite, SharedState};
use crate::testing::servers::RedisServer;
use schemas::*;
use std::sync::Arc;

fn state(server: &RedisServer, prefix: &str) -> Arc<RedisState> {
    let mut config = RedisConfig::new(server.url());
    config.prefix = prefix.to_string();
    Arc::new(RedisState::new(config).unwrap())
}

#[tokio::test]
async fn redis_state_passes_the_shared_state_kit() {
    let Some(server) = RedisServer::start("the Redis shared state contract (claims, leases, fencing, pacing)") else {
        return;
    };
    conformance::shared_state(state(&server, "kit")).await;
}

#[tokio::test]
async fn an_outage_is_transient_and_the_state_reconnects() {
    let Some(mut server) = RedisServer::start("Redis outages are reported as transient and recovered from") else {
        return;
    };
    let s = state(&server, "outage");
    s.ping().await.unwrap();
    let port = server.port();
    server.kill();
    let err = s.next_id("x").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    // A new server on the same port: the handle reconnects by itself.
    let mut child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let id = loop {
        match s.next_id("x").await {
            Ok(id) => break id,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnect: {e}"),
        }
    };
    assert_eq!(id, 1);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn tenants_and_prefixes_do_not_see_each_other() {
    let Some(server) = RedisServer::start("Redis keys are scoped by tenant and prefix") else { return };
    let (a, b) = (state(&server, "one"), state(&server, "two"));
    let key = |t: u64| MessageKey {
        tenant: TenantId(t),
        campaign: CampaignId(1),
        bucket: 0,
        id: MessageId::derive(TenantId(t), CampaignId(1), RecipientId(1), Channel::Sms),
    };
    let claim = Claim::InFlight { attempt: 1, at_ms: 1 };
    let w = ClaimWrite { key: key(1), expected: None, claim: claim.clone() };
    assert_eq!(a.put_claims(std::slice::from_ref(&w), None).await.unwrap(), vec![true]);
    assert_eq!(b.get_claims(&[key(1)]).await.unwrap(), vec![None], "another prefix");
    assert_eq!(a.get_claims(&[key(2)]).await.unwrap(), vec![None], "another tenant");
    a.stop_sender(TenantId(2), "sms", "+1").await.unwrap();
    // Purging tenant 1 leaves tenant 2 alone, in budgets.
    while !a.purge_tenant(TenantId(1), 1).await.unwrap() {}
    assert_eq!(a.get_claims(&[key(1)]).await.unwrap(), vec![None]);
    assert_eq!(a.stopped_senders(TenantId(2)).await.unwrap().len(), 1);
}
