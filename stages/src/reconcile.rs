//! reconcile: delivery.outcomes + receipts.inbound + delivery.dlq → message log, counters, DLQ.
//!
//! **The state machine** is a join over a fixed rank of statuses:
//! `queued < cancelled < sent < failed < dead_lettered < delivered < read < suppressed`.
//! An event moves a message to `max(current, event's status)`, so applying events is
//! commutative and idempotent: receipts out of order or delivered many times give the same
//! final state as once in order. The rank encodes the provider facts: `failed` after `sent`
//! wins (the message failed after acceptance), `delivered` after `failed` wins ("failed is
//! terminal unless a later delivered proves otherwise"), and an accept that races a cancel wins
//! (the message really went out). One rule orders by attempt instead of rank: an acceptance from
//! a later attempt supersedes an earlier attempt's failure (a DLQ redrive re-sends), and an
//! earlier attempt's failure is ignored once a later attempt is known.
//!
//! **Exact counters.** Counters count messages per current status; they change only on a
//! transition and are written in the same atomic store write as the rows they count
//! (`MessageLog::apply`). **Contract: one writer per partition.** A campaign's outcomes, receipts
//! and dead letters all go to the same partition number of their three topics (keyed by
//! campaign; what arrives elsewhere is forwarded, never applied: [`forward`]), and one
//! reconciler owns that partition of all three (one process here; the holder of the partition's
//! lease in the distributed deployment), serializing its steps per partition. So a campaign's
//! rows and counters have exactly one writer and read-modify-write is safe without any
//! cross-process lock. `Sealed { total }` (from chunk) fixes the campaign's total; the campaign
//! completes when every one of those messages is terminal.
//!
//! **Dead letters** are written for failed attempts; an accept from a later attempt (a redrive
//! that went through) clears the message's entry, and a letter older than what the log already
//! knows (it raced the redrive's outcome) is not written.
//!
//! It is not: a sender. It never calls a provider.

mod forward;
mod lattice;
mod metrics;

pub use lattice::{apply_event, rank, Applied, MessageEvent};
pub use metrics::ReconcileMetrics;

use foldhash::HashMapExt;
use lattice::is_failure;
use pipeline::{topics, Emitter, Input, Partition, Stage, StageError, Step};
use schemas::helpers::Generations;
use schemas::*;
use std::collections::{HashMap, HashSet};
use std::result::Result;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{CampaignCounters, Catalog, DlqEntry, LogBatch, LogWrite, MessageLog, MessageRecord, MessageStatus};

/// How long reconcile trusts what it read of a tenant's state.
const TENANT_TTL: Duration = Duration::from_secs(5);

/// Counters of campaigns touched recently, per partition (the store holds the truth).
type CounterCache = HashMap<(TenantId, CampaignId), CampaignCounters>;

/// Message rows kept per partition after writing them, per generation: a receipt usually
/// follows its acceptance within a second, and then needs no store read. Only rows that await
/// their first receipt are added; a row written past that is replaced where held, never added
/// (`Reconciler::apply`). Kept encoded, as the store writes them: ~90 bytes in one allocation
/// for a delivered row, against 120 bytes and three allocations of ~100 more decoded.
const ROW_GENERATION: usize = 8_192;

/// What one partition's owner keeps between steps. Coherent with the store because this
/// owner is the partition's only writer (see the module docs); cleared when the partition is
/// assigned or revoked, since another owner may have written meanwhile.
struct PartitionCache {
    counters: CounterCache,
    rows: Generations<MessageKey, Box<[u8]>>,
    /// Campaigns whose cut-short log writes were finished (`MessageLog::settle`) since this
    /// process took the partition, or since its last failed write.
    settled: HashSet<(TenantId, CampaignId)>,
}

impl Default for PartitionCache {
    fn default() -> Self {
        Self { counters: CounterCache::new(), rows: Generations::new(ROW_GENERATION), settled: HashSet::new() }
    }
}

/// Shared reconcile state behind the three reconcile consumers.
pub struct Reconciler {
    catalog: Arc<dyn Catalog>,
    log: Arc<dyn MessageLog>,
    /// One per partition: held for a step, so the partition's steps are serialized (the
    /// single-writer contract in the module docs).
    partitions: Vec<tokio::sync::Mutex<PartitionCache>>,
    /// Whether a tenant was purged, as last read.
    purged: std::sync::Mutex<HashMap<TenantId, (bool, Instant)>>,
    pub metrics: ReconcileMetrics,
}

/// A message row being reconciled: its state, whether it changed, and a new index entry.
struct PendingRow {
    row: Option<MessageRecord>,
    dirty: bool,
    index: Option<(String, String)>,
}

enum Event {
    Message(MessageKey, MessageEvent),
    Sealed(TenantId, CampaignId, u64),
    DeadLetter(DlqEntry),
}

impl Event {
    fn tenant(&self) -> TenantId {
        self.campaign().0
    }

    fn campaign(&self) -> (TenantId, CampaignId) {
        match self {
            Event::Message(key, _) => (key.tenant, key.campaign),
            Event::Sealed(tenant, campaign, _) => (*tenant, *campaign),
            Event::DeadLetter(entry) => (entry.key.tenant, entry.key.campaign),
        }
    }
}

impl Reconciler {
    pub fn new(catalog: Arc<dyn Catalog>, log: Arc<dyn MessageLog>) -> Arc<Self> {
        let partitions = (0..topics::OUTCOMES.spec.partitions()).map(|_| tokio::sync::Mutex::default()).collect();
        Arc::new(Self {
            catalog,
            log,
            partitions,
            purged: std::sync::Mutex::new(HashMap::new()),
            metrics: ReconcileMetrics::default(),
        })
    }

    /// Whether the tenant's data was purged (a tombstone remains): its events must not
    /// recreate rows. Deleted-but-not-purged tenants still reconcile, so the campaigns their
    /// deletion cancelled settle and their counters add up.
    async fn is_purged(&self, tenant: TenantId) -> crate::Result<bool> {
        if let Some((purged, at)) = self.purged.lock().unwrap_or_else(|p| p.into_inner()).get(&tenant) {
            if at.elapsed() < TENANT_TTL {
                return Ok(*purged);
            }
        }
        let purged = matches!(
            self.catalog.get_tenant(tenant).await?.map(|t| t.state),
            Some(storage::TenantState::Purged { .. })
        );
        let mut cache = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 65_536 {
            cache.clear();
        }
        cache.insert(tenant, (purged, Instant::now()));
        Ok(purged)
    }

    /// Applies one step's events (all of partition `partition`).
    async fn apply(&self, partition: Partition, mut events: Vec<Event>) -> crate::Result<()> {
        self.metrics.events.fetch_add(events.len() as u64, Ordering::Relaxed);
        self.drop_purged(&mut events).await?;
        // Serializes the partition's writes: counters and rows are read-modify-write.
        let slot = self.partitions.get(partition as usize).ok_or_else(|| {
            crate::Error::Pipeline(pipeline::Error::Fatal(format!("reconcile has no partition {partition}")))
        })?;
        let mut cache = slot.lock().await;
        let cache = &mut *cache;
        // Before any row is read: a write the previous owner (or a failed step) cut short is
        // finished first, or this step would see rows ahead of their counters.
        let mut campaigns: Vec<(TenantId, CampaignId)> = events.iter().map(Event::campaign).collect();
        campaigns.sort_unstable();
        campaigns.dedup();
        if cache.settled.len() > 65_536 {
            cache.settled.clear();
        }
        for (tenant, campaign) in campaigns {
            if !cache.settled.contains(&(tenant, campaign)) {
                self.log.settle(tenant, campaign).await?;
                cache.settled.insert((tenant, campaign));
            }
        }
        let mut keys: Vec<MessageKey> = events
            .iter()
            .filter_map(|e| match e {
                Event::Message(k, _) => Some(*k),
                Event::DeadLetter(entry) => Some(entry.key),
                Event::Sealed(..) => None,
            })
            .collect();
        keys.sort_by_key(|k| (k.tenant, k.campaign, k.bucket, k.id));
        keys.dedup();
        let mut rows = foldhash::HashMap::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in keys {
            // A row that does not decode is read from the store, as if it were not held.
            match cache.rows.peek(&key).and_then(|bytes| schemas::codec::decode::<MessageRecord>(bytes).ok()) {
                Some(row) => {
                    rows.insert(key, PendingRow { row: Some(row), dirty: false, index: None });
                }
                None => missing.push(key),
            }
        }
        self.metrics.row_cache_hits.fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.metrics.row_reads.fetch_add(missing.len() as u64, Ordering::Relaxed);
        let existing = self.log.get_messages(&missing).await?;
        rows.extend(
            missing.into_iter().zip(existing).map(|(k, row)| (k, PendingRow { row, dirty: false, index: None })),
        );
        let mut work = Work {
            reconciler: self,
            cache: &cache.counters,
            rows,
            touched: HashMap::new(),
            batch: LogBatch::default(),
        };
        for event in events {
            match event {
                Event::Message(key, event) => work.message(key, event).await?,
                Event::Sealed(tenant, campaign, total) => work.counters(tenant, campaign).await?.total = Some(total),
                Event::DeadLetter(entry) => work.dead_letter(entry),
            }
        }
        let (batch, touched) = work.finish();
        // What the cache will hold of this batch: rows that await their first receipt, and new
        // values of rows it holds (`None`: the row did not encode, so it is dropped from the cache).
        let written: Vec<_> = batch
            .writes
            .iter()
            .filter_map(|w| {
                let awaits_receipt = w.record.status == MessageStatus::Sent;
                (awaits_receipt || cache.rows.holds(&w.key)).then(|| {
                    let bytes = schemas::codec::encode(&w.record).ok().map(Vec::into_boxed_slice);
                    (w.key, awaits_receipt, bytes)
                })
            })
            .collect();
        if let Err(e) = self.log.apply(batch).await {
            // Part of it may be written: settle again, and trust nothing cached.
            *cache = PartitionCache::default();
            return Err(e.into());
        }
        // Only now, with the write durable, does the cache move forward.
        if cache.counters.len() > 4_096 {
            cache.counters.retain(|_, c| c.completed_ms.is_none());
        }
        cache.counters.extend(touched);
        // Held for the receipt still to come: a row that awaits its first receipt is put, any
        // other only refreshed where held, so rows done with do not push out rows that wait.
        for (key, awaits_receipt, bytes) in written {
            match bytes {
                Some(bytes) if awaits_receipt => cache.rows.put(key, bytes),
                Some(bytes) => cache.rows.refresh(&key, bytes),
                None => cache.rows.remove(&key),
            }
        }
        Ok(())
    }

    /// Forgets what was kept of a partition (its ownership changed).
    async fn forget(&self, partition: Partition) {
        if let Some(slot) = self.partitions.get(partition as usize) {
            *slot.lock().await = PartitionCache::default();
        }
    }

    /// Drops the events of purged tenants (counted).
    async fn drop_purged(&self, events: &mut Vec<Event>) -> crate::Result<()> {
        let mut tenants: Vec<TenantId> = events.iter().map(Event::tenant).collect();
        tenants.sort_unstable();
        tenants.dedup();
        for tenant in tenants {
            if self.is_purged(tenant).await? {
                let before = events.len();
                events.retain(|e| e.tenant() != tenant);
                self.metrics.purged_tenant_events.fetch_add((before - events.len()) as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Gives each of one tenant's receipts its message key: callback data must name a message
    /// of the tenant, and provider ids resolve through the tenant's own index. Anything else is
    /// counted as unmatched and dropped: it changes nothing.
    async fn resolve(&self, batch: ReceiptBatch) -> crate::Result<ReceiptBatch> {
        let tenant = batch.tenant;
        let mut keyed = Vec::with_capacity(batch.receipts.len());
        let mut by_provider: HashMap<String, Vec<Receipt>> = HashMap::new();
        for r in batch.receipts {
            match r.key {
                Some(key) if key.tenant == tenant => keyed.push(r),
                Some(_) => self.unmatched(tenant, &r, "callback data names another tenant's message"),
                None => by_provider.entry(r.provider.clone()).or_default().push(r),
            }
        }
        for (provider, receipts) in by_provider {
            let ids: Vec<&str> = receipts.iter().map(|r| r.provider_message_id.as_str()).collect();
            let keys = self.log.lookup_provider_ids(tenant, &provider, &ids).await?;
            for (r, key) in receipts.into_iter().zip(keys) {
                match key {
                    Some(key) => keyed.push(Receipt { key: Some(key), ..r }),
                    None => self.unmatched(tenant, &r, "unknown provider message id"),
                }
            }
        }
        Ok(ReceiptBatch { tenant, receipts: keyed })
    }

    fn unmatched(&self, tenant: TenantId, r: &Receipt, why: &str) {
        self.metrics.unmatched_receipts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%tenant, provider = %r.provider, id = %r.provider_message_id, why, "receipt matched no message; dropped");
    }
}

/// One reconcile step's working set: the rows it read, the counters it touched, and the
/// batch it will write.
struct Work<'a> {
    reconciler: &'a Reconciler,
    cache: &'a CounterCache,
    rows: foldhash::HashMap<MessageKey, PendingRow>,
    touched: HashMap<(TenantId, CampaignId), CampaignCounters>,
    batch: LogBatch,
}

impl Work<'_> {
    /// The campaign's counters as this step left them (loaded on first touch).
    async fn counters(&mut self, tenant: TenantId, campaign: CampaignId) -> crate::Result<&mut CampaignCounters> {
        let key = (tenant, campaign);
        if !self.touched.contains_key(&key) {
            let c = match self.cache.get(&key) {
                Some(c) => *c,
                None => self.reconciler.log.get_counters(tenant, campaign).await?.unwrap_or_default(),
            };
            self.touched.insert(key, c);
        }
        Ok(self.touched.entry(key).or_default())
    }

    async fn message(&mut self, key: MessageKey, event: MessageEvent) -> crate::Result<()> {
        self.counters(key.tenant, key.campaign).await?;
        let Some(PendingRow { row, dirty, index }) = self.rows.get_mut(&key) else { return Ok(()) };
        let applied = apply_event(row, &event);
        if applied.learned_provider_id {
            *index = event.provider_message_id.clone();
        }
        if applied.superseded {
            self.batch.cleared_dead_letters.push(key);
            self.batch.dead_letters.retain(|e| e.key != key);
        }
        *dirty |= applied.changed;
        let status = row.as_ref().map(|r| r.status);
        if let (Some(previous), Some(status)) = (applied.transition, status) {
            self.reconciler.metrics.transitions.fetch_add(1, Ordering::Relaxed);
            let counters = self.counters(key.tenant, key.campaign).await?;
            if let Some(slot) = previous.and_then(|p| counters.slot(p)) {
                *slot = slot.saturating_sub(1);
            }
            if let Some(slot) = counters.slot(status) {
                *slot += 1;
            }
        }
        Ok(())
    }

    fn dead_letter(&mut self, entry: DlqEntry) {
        // A letter older than what the log knows (a later attempt went through) is not kept.
        let superseded = self.rows.get(&entry.key).and_then(|r| r.row.as_ref()).is_some_and(|r| {
            r.attempts > entry.letter.attempts && !is_failure(r.status) && rank(r.status) > rank(MessageStatus::Queued)
        });
        if !superseded {
            self.batch.dead_letters.push(entry);
        }
    }

    /// Completes (or reopens) campaigns and returns what to write and the new counters.
    fn finish(mut self) -> (LogBatch, HashMap<(TenantId, CampaignId), CampaignCounters>) {
        let now = now_ms();
        for ((tenant, campaign), counters) in self.touched.iter_mut() {
            // A redrive can reopen a completed campaign.
            if counters.completed_ms.is_some() && counters.total.is_some_and(|t| counters.terminal() < t) {
                counters.completed_ms = None;
            }
            if counters.completed_ms.is_none() && counters.total.is_some_and(|t| counters.terminal() == t) {
                counters.completed_ms = Some(now);
                self.reconciler.metrics.completed_campaigns.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%tenant, %campaign, total = counters.total, "campaign completed");
            }
            self.batch.counters.push((*tenant, *campaign, *counters));
        }
        self.batch.at_ms = now;
        for (key, PendingRow { row, dirty, index }) in self.rows {
            if let (true, Some(record)) = (dirty, row) {
                self.batch.writes.push(LogWrite { key, record, index });
            }
        }
        (self.batch, self.touched)
    }
}

macro_rules! reconcile_stage {
    ($name:ident, $input:ty, $group:expr, |$this:ident, $value:ident| $resolve:expr, $events:expr) => {
        /// A reconcile consumer (see the module docs).
        pub struct $name(pub Arc<Reconciler>);

        impl Stage for $name {
            type In = $input;

            fn name(&self) -> &'static str {
                $group.name
            }

            fn metrics(&self) -> Vec<pipeline::Sample> {
                // The three consumers share one reconciler: one of them reports it.
                if $group.name == topics::RECONCILE.name {
                    self.0.samples()
                } else {
                    Vec::new()
                }
            }

            async fn on_assigned(&self, partition: Partition) {
                self.0.forget(partition).await;
            }

            async fn on_revoked(&self, partition: Partition) {
                self.0.forget(partition).await;
            }

            async fn process(&self, batch: Vec<Input<$input>>, out: &mut Emitter) -> Result<Step<$input>, StageError> {
                let $this = &self.0;
                let Some(partition) = batch.first().map(|i| i.partition) else { return Ok(Step::Done) };
                let mut events = Vec::new();
                for input in batch {
                    let $value = input.value;
                    let (own, forwarded) = forward::keep_own($resolve, partition, out).map_err(crate::Error::from)?;
                    $this.metrics.forwarded.fetch_add(forwarded, Ordering::Relaxed);
                    let $value = own;
                    events.extend($events);
                }
                $this.apply(partition, events).await?;
                Ok(Step::Done)
            }
        }
    };
}

reconcile_stage!(
    ReconcileOutcomes,
    OutcomeBatch,
    topics::RECONCILE,
    |this, batch| batch,
    batch.events.into_iter().map(|e| {
        match e {
            OutcomeEvent::Message(o) => Event::Message(o.key, MessageEvent::from_outcome(&o)),
            OutcomeEvent::Sealed { tenant, campaign, total } => Event::Sealed(tenant, campaign, total),
        }
    })
);
reconcile_stage!(
    ReconcileReceipts,
    ReceiptBatch,
    topics::RECONCILE_RECEIPTS,
    |this, batch| this.resolve(batch).await?,
    batch.receipts.into_iter().filter_map(|r| r.key.map(|k| Event::Message(k, MessageEvent::from_receipt(&r))))
);
reconcile_stage!(
    ReconcileDeadLetters,
    DeadLetterBatch,
    topics::RECONCILE_DLQ,
    |this, batch| batch,
    batch.letters.into_iter().map(|letter| Event::DeadLetter(DlqEntry { key: letter.message.key, letter }))
);

#[cfg(test)]
mod tests;
