use super::*;
use crate::deliver::provider::SendResult;
use async_trait::async_trait;
use schemas::RenderedMessage;
use storage::{EmbeddedState, EmbeddedStore, EmbeddedStoreConfig};

struct Nobody;
#[async_trait]
impl Provider for Nobody {
    fn name(&self) -> &str {
        "nobody"
    }
    async fn send(&self, _: &str, _: &RenderedMessage) -> SendResult {
        SendResult::Accepted { provider_message_id: String::new() }
    }
}

fn state() -> (tempfile::TempDir, EmbeddedState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).unwrap());
    (dir, EmbeddedState::new(store))
}

fn max_window(calls: &[Duration]) -> usize {
    (0..calls.len())
        .map(|i| calls[i..].iter().take_while(|t| **t < calls[i] + Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0)
}

/// Takes slots greedily for `secs` (waiting as told), recording each granted call's time.
async fn drive(route: &Route, state: &dyn SharedState, secs: u64) -> Vec<(Duration, String)> {
    let start = tokio::time::Instant::now();
    let mut calls = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let slots = route.slots(state, 64).await.unwrap();
        if slots.no_sender {
            break;
        }
        for (sender, n) in &slots.grants {
            calls.extend(std::iter::repeat_n((start.elapsed(), sender.id.clone()), *n as usize));
        }
        if slots.grants.is_empty() {
            tokio::time::sleep(slots.wait.max(Duration::from_micros(100))).await;
        }
    }
    calls
}

const T: TenantId = TenantId(1);

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn paces_at_rate_plus_burst_without_drift() {
    let (_dir, state) = state();
    let route = Route::new(Arc::new(Nobody), vec![Arc::new(Sender::new(T, "p", "s", Some(2_000), 200))], T, None, 0);
    let calls: Vec<Duration> = drive(&route, &state, 5).await.into_iter().map(|(t, _)| t).collect();
    assert!(max_window(&calls) <= 2_200, "{} calls in one second", max_window(&calls));
    // 5 s at 2,000/s; a drifting pacer falls well short of this.
    assert!(calls.len() >= 9_990, "only {} calls in 5 s", calls.len());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn several_senders_add_up_and_stopped_ones_are_skipped() {
    let (_dir, state) = state();
    let a = Arc::new(Sender::new(T, "p", "a", Some(50), 5));
    let b = Arc::new(Sender::new(T, "p", "b", Some(30), 3));
    let route = Route::new(Arc::new(Nobody), vec![a.clone(), b.clone()], T, None, 0);
    let mut by = std::collections::HashMap::<String, u32>::new();
    for (_, id) in drive(&route, &state, 10).await {
        *by.entry(id).or_default() += 1;
    }
    assert!((498..=506).contains(&by["a"]) && (298..=304).contains(&by["b"]), "{by:?}");
    assert!(b.stop());
    assert!(!route.has_other_live(&a));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let slots = route.slots(&state, 10).await.unwrap();
    assert!(slots.grants.iter().all(|(s, _)| s.id == "a") && slots.granted() > 0);
    a.stop();
    assert!(route.slots(&state, 10).await.unwrap().no_sender);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tenant_limit_holds_above_senders_and_unused_tokens_go_back() {
    let (_dir, state) = state();
    let senders =
        vec![Arc::new(Sender::new(T, "p", "a", Some(80), 8)), Arc::new(Sender::new(T, "p", "b", Some(80), 8))];
    let route = Route::new(Arc::new(Nobody), senders, T, Some((40, 4)), 0);
    let calls: Vec<Duration> = drive(&route, &state, 5).await.into_iter().map(|(t, _)| t).collect();
    assert!(max_window(&calls) <= 44, "{}", max_window(&calls));
    assert!(calls.len() >= 195, "{}", calls.len());
    // Unpaced senders under a tenant limit: the tenant bucket alone paces.
    let unpaced =
        Route::new(Arc::new(Nobody), vec![Arc::new(Sender::new(T, "q", "u", None, 0))], TenantId(2), Some((100, 1)), 0);
    let calls: Vec<Duration> = drive(&unpaced, &state, 3).await.into_iter().map(|(t, _)| t).collect();
    assert!(max_window(&calls) <= 101 && calls.len() >= 295, "{} in {}", max_window(&calls), calls.len());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unpaced_senders_share_evenly() {
    let (_dir, state) = state();
    let senders = (0..3).map(|i| Arc::new(Sender::new(T, "p", format!("s{i}"), None, 0))).collect();
    let route = Route::new(Arc::new(Nobody), senders, T, None, 0);
    let slots = route.slots(&state, 10).await.unwrap();
    let mut counts: Vec<u32> = slots.grants.iter().map(|(_, n)| *n).collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![3, 3, 4]);
}

#[test]
fn aimd_decreases_once_per_cooldown_and_recovers_additively() {
    let sender = Sender::new(T, "p", "s", Some(80), 8);
    assert_eq!(sender.slow_down(DECREASE), Some(56.0));
    assert_eq!(sender.slow_down(DECREASE), None, "in-flight signals within the cooldown count once");
    let (configured, current) = sender.rates().unwrap();
    assert_eq!(configured, 80.0);
    assert!((56.0..56.1).contains(&current), "{current}");
    {
        let mut p = sender.lock().unwrap();
        let later = Instant::now() + Duration::from_secs(2);
        p.last_decrease = Some(Instant::now() - COOLDOWN);
        p.recover(later);
        // Up to 2 s × 1.6/s of recovery.
        assert!(p.current > 56.0 && p.current <= 59.3, "{}", p.current);
        p.recover(later + Duration::from_secs(60));
        assert_eq!(p.current, 80.0, "never above the configured rate");
    }
    assert!(Sender::new(T, "p", "u", None, 0).slow_down(DECREASE).is_none(), "unpaced senders have no rate to cut");
}
