//! Probe campaigns of `herald bench --probes N`: small campaigns (1,000 recipients, each of its
//! own tenant) sent one per second while the bench's big campaigns run, measuring what a small
//! sender waits behind a big one — send to first provider call — from the provider's ledger.
//!
//! It is not: part of the main figures. Throughput, lost, fairness and per-tenant rates are the
//! big campaigns' alone; the ledger's call and duplicate totals include the probes (a duplicate
//! is a duplicate).

use crate::demo::wait_until_complete;
use crate::engine::Engine;
use crate::seed::{tenant_with_campaign, SeedSpec};
use schemas::{CampaignId, TenantId};
use serde::Serialize;
use stages::deliver::simulator::Ledger;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Recipients of each probe campaign.
pub const PROBE_RECIPIENTS: u64 = 1_000;
/// Time between two probes (the first goes one interval after the big campaigns).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A probe campaign as sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    /// When it was sent (ms since the epoch, the ledger's clock).
    pub sent_ms: u64,
}

/// What the probes measured.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// Probes sent while the big campaigns were still running (the only ones sent).
    pub sent: usize,
    pub recipients_each: u64,
    /// Send → the probe's first provider call, ms.
    pub first_call_p50_ms: u64,
    pub first_call_p99_ms: u64,
    pub first_call_max_ms: u64,
    /// Send → the probe's last provider call, ms (the whole small campaign).
    pub last_call_p99_ms: u64,
    /// Send → first provider call of each probe, ms, in the order they were sent (one per
    /// second from the start of the run), so a slow one can be placed in the run.
    pub first_call_ms: Vec<u64>,
}

/// Creates `n` probe tenants, each with a draft campaign of [`PROBE_RECIPIENTS`].
pub(crate) async fn seed(engine: &Engine, n: u32) -> anyhow::Result<Vec<(TenantId, CampaignId)>> {
    let mut probes = Vec::with_capacity(n as usize);
    for i in 0..n {
        let spec = SeedSpec {
            name: format!("probe-{i}"),
            recipients: PROBE_RECIPIENTS,
            rate_limit_per_s: None,
            burst: 0,
            weight: 1,
        };
        probes.push(tenant_with_campaign(engine, &spec).await?);
    }
    Ok(probes)
}

/// Sends the probes one per [`PROBE_EVERY`] until `done` (the big campaigns completed).
pub(crate) async fn send(
    engine: &Engine,
    probes: &[(TenantId, CampaignId)],
    done: &AtomicBool,
) -> anyhow::Result<Vec<Probe>> {
    let mut sent = Vec::with_capacity(probes.len());
    for &(tenant, campaign) in probes {
        let due = tokio::time::Instant::now() + PROBE_EVERY;
        while tokio::time::Instant::now() < due {
            if done.load(Ordering::Relaxed) {
                return Ok(sent);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent_ms = schemas::now_ms();
        engine.trigger(tenant, campaign).await?;
        sent.push(Probe { tenant, campaign, sent_ms });
    }
    Ok(sent)
}

/// Waits for the sent probes to complete (the big campaigns are done by then).
pub(crate) async fn finish(engine: &Engine, sent: &[Probe]) -> anyhow::Result<()> {
    let ids: Vec<_> = sent.iter().map(|p| (p.tenant, p.campaign)).collect();
    if !ids.is_empty() {
        wait_until_complete(engine, &ids, |_| {}).await?;
    }
    Ok(())
}

/// The probes' figures from the provider's ledger; `None` without probes.
pub(crate) fn report(sent: &[Probe], ledger: &Ledger) -> Option<ProbeReport> {
    if sent.is_empty() {
        return None;
    }
    // A probe the provider never saw counts as waiting until now: it must not vanish from the
    // percentiles.
    let now = schemas::now_ms();
    let (mut first, mut last): (Vec<u64>, Vec<u64>) = sent
        .iter()
        .map(|p| match ledger.tenants.get(&p.tenant).filter(|calls| calls.calls > 0) {
            Some(calls) => (calls.first_ms.saturating_sub(p.sent_ms), calls.last_ms.saturating_sub(p.sent_ms)),
            None => (now.saturating_sub(p.sent_ms), now.saturating_sub(p.sent_ms)),
        })
        .unzip();
    let first_call_ms = first.clone();
    first.sort_unstable();
    last.sort_unstable();
    Some(ProbeReport {
        sent: sent.len(),
        recipients_each: PROBE_RECIPIENTS,
        first_call_p50_ms: quantile(&first, 0.5),
        first_call_p99_ms: quantile(&first, 0.99),
        first_call_max_ms: quantile(&first, 1.0),
        last_call_p99_ms: quantile(&last, 0.99),
        first_call_ms,
    })
}

/// The nearest-rank `q` quantile of `xs` (sorted, non-empty).
fn quantile(xs: &[u64], q: f64) -> u64 {
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&xs, 0.5), 50);
        assert_eq!(quantile(&xs, 0.99), 99);
        assert_eq!(quantile(&xs, 1.0), 100);
        assert_eq!(quantile(&[7], 0.99), 7);
    }
}
