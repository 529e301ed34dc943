//! What reconcile saw, as counters and metrics samples. It is not: the state machine.

use super::Reconciler;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what reconcile saw (for metrics and reports).
#[derive(Debug, Default)]
pub struct ReconcileMetrics {
    pub events: AtomicU64,
    pub transitions: AtomicU64,
    /// Receipts that matched no message of the tenant they came from (unknown provider id,
    /// or callback data naming another tenant's message): counted, and they change nothing.
    pub unmatched_receipts: AtomicU64,
    /// Events for tenants already purged (late receipts after a deletion): dropped.
    pub purged_tenant_events: AtomicU64,
    /// Message rows found in the partition's cache of rows it just wrote.
    pub row_cache_hits: AtomicU64,
    /// Message rows read from the store.
    pub row_reads: AtomicU64,
    pub completed_campaigns: AtomicU64,
    /// Items that arrived on another campaign's reconcile partition and were forwarded to
    /// their own (`forward`).
    pub forwarded: AtomicU64,
}

impl Reconciler {
    /// What reconcile saw, as metrics samples.
    pub fn samples(&self) -> Vec<pipeline::Sample> {
        use pipeline::Sample;
        let m = &self.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        vec![
            Sample::counter("herald_reconcile_events_total", "events applied to the message log", load(&m.events)),
            Sample::counter("herald_reconcile_transitions_total", "message status transitions", load(&m.transitions)),
            Sample::counter(
                "herald_receipts_unmatched_total",
                "receipts that matched no message of their tenant (dropped)",
                load(&m.unmatched_receipts),
            ),
            Sample::counter(
                "herald_reconcile_purged_tenant_events_total",
                "events for purged tenants (dropped)",
                load(&m.purged_tenant_events),
            ),
            Sample::counter("herald_campaigns_completed_total", "campaigns completed", load(&m.completed_campaigns)),
            Sample::counter(
                "herald_reconcile_forwarded_total",
                "items forwarded to their campaign's reconcile partition",
                load(&m.forwarded),
            ),
            Sample::counter(
                "herald_reconcile_row_cache_hits_total",
                "message rows reconcile found among those it wrote lately",
                load(&m.row_cache_hits),
            ),
            Sample::counter(
                "herald_reconcile_row_reads_total",
                "message rows reconcile read from the store",
                load(&m.row_reads),
            ),
        ]
    }
}
