//! The embedded store: all durable state in one fjall database under `<data-dir>/store`.
//!
//! One fjall keyspace per table; keys are big-endian tuples `(partition key, clustering key)`
//! so a partition is a contiguous key range and range scans stay within it. Writes that must
//! survive a crash are committed as one atomic fjall batch flushed to the OS before returning
//! ([`Durability::Process`], survives SIGKILL) or fsynced ([`Durability::Power`]).
//!
//! It is not: shared between processes (fjall locks the directory), nor a network service.

mod audiences;
mod catalog;
mod inflight;
mod keys;
mod log;
mod migrate;
mod presence;
mod providers;
mod state;
mod workers;

pub use state::EmbeddedState;

use crate::Result;
use fjall::compaction::Leveled;
use fjall::config::{PartitioningPolicy, PinningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use schemas::codec;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// L0 tables that start a compaction into L1 (fjall's default is 4). Every flushed memtable
/// holds the interleaved writes of all running campaigns, so its key range spans theirs and an
/// L0 → L1 compaction rewrites every L1 table in between: waiting for 16 tables rewrites L1 a
/// quarter as often. The cost is reads: an absent key is looked for in up to 16 L0 bloom
/// filters. Measured, `herald bench --recipients 1000000 --tenants 4`, median of 3 alternated
/// against 4: wall 0.88×, CPU 0.87×, peak RSS 297 vs 321 MiB (16 on the per-message tables
/// only: wall 0.97×, 288 vs 298 MiB). Below fjall's write stall (20 L0 runs) and halt (30).
/// fjall stores a table's strategy when it creates the table, so a store created before this
/// setting keeps 4.
const L0_TABLES: u8 = 16;

/// Target size of a table beyond L0 (fjall's default is 64 MiB), which also sizes L1 (16 ×
/// this). A smaller L1 bounds what each L0 → L1 compaction rewrites, and because message rows
/// and claims are keyed in write order within a campaign ([`keys::short_message`]), what spills from
/// L1 into L2 mostly does not overlap L2 and moves there without a rewrite. 10M x 4 (single runs,
/// same day): 39.1k msgs/s with this and bucketed claims, 29.9k with bucketed claims and 64 MiB,
/// 25.7k before both; figures in ARCHITECTURE.md. Stores created before keep 64 MiB (as
/// `L0_TABLES`).
const TABLE_BYTES: u64 = 16 << 20;

/// The keyspace that held claims keyed `(tenant, campaign, id)`: hashed ids in no order, so
/// every flushed table overlapped every table of the next level. Claims now share the message
/// rows' bucketed key ([`keys::short_message`], keyspace `claims_short`).
const LEGACY_CLAIMS: &str = "claims";

/// The keyspace that held the provider-id index keyed `(tenant, provider, id)` (~50-byte keys,
/// longer than byteview's 20-byte inline size, so every key a compaction carried was a view
/// keeping its input block alive). The index is now `provider_ids_hashed` (`log::provider_key`).
const LEGACY_PROVIDER_IDS: &str = "provider_ids";

/// The keyspaces that held message rows and claims keyed `(tenant, campaign, bucket, id)` in
/// 36 bytes (longer than byteview's inline 20); moved at open to `messages_short` and `claims_short`
/// ([`migrate`]).
const LONG_KEY_MESSAGES: &str = "messages";
const LONG_KEY_CLAIMS: &str = "claims_by_bucket";

/// How far a commit is flushed before the store reports it done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the OS: survives a process crash or SIGKILL, not a power loss.
    #[default]
    Process,
    /// fdatasync'd: survives power loss, at the cost of one sync per commit.
    Power,
}

impl Durability {
    fn mode(self) -> PersistMode {
        match self {
            Durability::Process => PersistMode::Buffer,
            Durability::Power => PersistMode::SyncData,
        }
    }
}

/// Embedded store settings; memory use is bounded by these, not by data size.
#[derive(Debug, Clone)]
pub struct EmbeddedStoreConfig {
    /// Block cache in bytes.
    pub cache_bytes: u64,
    /// Memtable size per table in bytes (a table's memtable is flushed to disk past this).
    pub memtable_bytes: u64,
    pub durability: Durability,
    /// Memtable bytes (active + sealed, all tables) above which message-log writers wait for
    /// flushes: the configured bound on write-buffer memory (fjall alone allows up to 5
    /// memtables per table, and its own global write-buffer limit is not enforced in 3.1). The
    /// binary derives it from one memory budget (`herald::backend::BackendChoice::embedded`).
    pub write_budget_bytes: u64,
    /// fjall background threads (flush + compaction). Measured trade-off on 2 cores: with 2,
    /// fjall 3.1's worker 0 re-queues compaction requests to itself and spins while the other
    /// compacts, so it runs at a lower priority (`embedded/workers.rs`); with 1, compaction falls
    /// behind on large runs and memory grows (5M recipients: +86 MiB vs +36 MiB). Default 2.
    pub worker_threads: usize,
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 32 << 20,
            memtable_bytes: 16 << 20,
            durability: Durability::Process,
            write_budget_bytes: 256 << 20,
            worker_threads: 2,
        }
    }
}

/// The embedded (fjall) implementation of every store trait.
pub struct EmbeddedStore {
    db: Database,
    durability: Durability,
    write_budget: u64,
    meta: Keyspace,
    tenants: Keyspace,
    templates: Keyspace,
    audiences: Keyspace,
    recipients: Keyspace,
    recipient_addresses: Keyspace,
    suppressions: Keyspace,
    campaigns: Keyspace,
    checkpoints: Keyspace,
    counters: Keyspace,
    /// Message rows, keyed by [`keys::short_message`].
    messages: Keyspace,
    /// The provider-id index, keyed `(tenant, 96 bits of a hash of provider and id)`.
    provider_ids: Keyspace,
    /// The index a store written before kept under `(tenant, provider, id)`
    /// ([`LEGACY_PROVIDER_IDS`]): read on a miss, never written, purged with its tenant, and
    /// dropped at open once empty.
    legacy_provider_ids: Option<Keyspace>,
    /// Send claims, keyed like message rows ([`keys::short_message`]).
    claims: Keyspace,
    /// Claims a store written before that kept under `(tenant, campaign, id)`: read when a claim
    /// is not in `claims` (a campaign in flight across the upgrade), never written, purged with
    /// its tenant, and dropped at open once empty. `None` in stores without any.
    legacy_claims: Option<Keyspace>,
    dlq: Keyspace,
    providers: Keyspace,
    /// Global sender → tenant and verify-token blind index → tenant.
    provider_index: Keyspace,
    quota: Keyspace,
    idempotency: Keyspace,
    /// Senders a provider stopped (shared state, kept here for durability).
    stopped: Keyspace,
    /// Serializes read-modify-write of id sequences and audience rows (single writer).
    sequence_lock: Mutex<()>,
    /// Serializes compare-and-set writes (campaign versions, idempotency reservations).
    cas_lock: Mutex<()>,
    /// Group rows of in-flight claims, keyed `(tenant, group)` ([`inflight`]).
    inflight: Keyspace,
    /// Every in-flight claim, as `inflight` holds it (taken under `cas_lock`; see [`inflight`]).
    in_flight: Mutex<inflight::InFlightClaims>,
    /// Which claims exist, per bucket (taken under `cas_lock`; see [`presence`]).
    claim_presence: Mutex<presence::Presence>,
    /// Which message rows exist, per bucket (see [`presence`]).
    row_presence: Mutex<presence::Presence>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, config: EmbeddedStoreConfig) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = workers::open_lowering_worker_zero(
            Database::builder(dir).cache_size(config.cache_bytes),
            config.worker_threads,
        )?;
        let memtable = config.memtable_bytes;
        let options = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable)
                // Index and filter blocks go through the bounded block cache instead of being
                // pinned: pinned blocks grow with the data, the cache does not. That holds in L0
                // too, whose tables' whole indexes were pinned: 13.2 MiB of the 10M x 4 peak
                // against 2.7 at 1M (heap profiles; up to L0_TABLES wait there). Median of 3
                // alternated: 10M x 4 peak 217.5 vs 231.5 MiB, 1M x 4 171.5 vs 174.3, wall
                // 0.987 and 0.975 (ARCHITECTURE.md). fjall stores this when it creates a
                // keyspace, so older stores keep their L0 indexes pinned.
                .index_block_pinning_policy(PinningPolicy::all(false))
                .filter_block_pinning_policy(PinningPolicy::all(false))
                // Beyond L0 they are also split into 4 KiB partitions under a small top-level
                // block that stays in memory, so a point read that misses the cache reads one
                // partition, not a table's whole filter or index (fjall partitions only from L3).
                // 3M x 4, single runs: peak RSS 276 MiB against 307 with whole blocks (reads per
                // message 5.9 vs 5.6 KB; partitioning L0 too halved them, but cost 8% wall at 1M).
                // Figures in ARCHITECTURE.md. fjall stores this when it creates a table, so older
                // stores keep whole blocks (as L0_TABLES).
                .index_block_partitioning_policy(PartitioningPolicy::new([false, true]))
                .filter_block_partitioning_policy(PartitioningPolicy::new([false, true]))
                .compaction_strategy(Arc::new(
                    Leveled::default().with_l0_threshold(L0_TABLES).with_table_target_size(TABLE_BYTES),
                ))
        };
        let ks = |name: &str| db.keyspace(name, options);
        // An older store's keyspace stays while it holds anything, read on a miss.
        let legacy = |name: &str| -> Result<Option<Keyspace>> {
            if !db.keyspace_exists(name) {
                return Ok(None);
            }
            let old = ks(name)?;
            if old.first_key_value().is_none() {
                db.delete_keyspace(old)?;
                return Ok(None);
            }
            Ok(Some(old))
        };
        let legacy_claims = legacy(LEGACY_CLAIMS)?;
        let legacy_provider_ids = legacy(LEGACY_PROVIDER_IDS)?;
        let messages = ks("messages_short")?;
        let claims = ks("claims_short")?;
        migrate::to_short_keys(&db, LONG_KEY_MESSAGES, ks, &messages)?;
        migrate::to_short_keys(&db, LONG_KEY_CLAIMS, ks, &claims)?;
        let inflight = ks("inflight")?;
        let in_flight = Mutex::new(inflight::InFlightClaims::load(&inflight)?);
        Ok(Self {
            meta: ks("meta")?,
            tenants: ks("tenants")?,
            templates: ks("templates")?,
            audiences: ks("audiences")?,
            recipients: ks("recipients")?,
            recipient_addresses: ks("recipient_addresses")?,
            suppressions: ks("suppressions")?,
            campaigns: ks("campaigns")?,
            checkpoints: ks("checkpoints")?,
            counters: ks("counters")?,
            messages,
            provider_ids: ks("provider_ids_hashed")?,
            legacy_provider_ids,
            claims,
            legacy_claims,
            dlq: ks("dlq")?,
            providers: ks("providers")?,
            provider_index: ks("provider_index")?,
            quota: ks("quota")?,
            idempotency: ks("idempotency")?,
            stopped: ks("stopped")?,
            durability: config.durability,
            write_budget: config.write_budget_bytes,
            sequence_lock: Mutex::new(()),
            cas_lock: Mutex::new(()),
            inflight,
            in_flight,
            claim_presence: Mutex::default(),
            row_presence: Mutex::default(),
            db,
        })
    }

    fn batch(&self) -> pipeline::embedded::Batch {
        pipeline::embedded::Batch::new(self.db.batch().durability(Some(self.durability.mode())))
    }

    /// Waits (asynchronously, bounded) while memtables exceed the write budget, so heavy writers
    /// slow down to the flush rate instead of growing memory.
    async fn within_budget(&self) {
        for _ in 0..5_000 {
            if self.db.write_buffer_size() <= self.write_budget {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Flushes everything written so far to the OS and syncs it (used on graceful shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Bytes on disk, for reports.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

fn get<T: DeserializeOwned>(ks: &Keyspace, key: &[u8]) -> Result<Option<T>> {
    match ks.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The fingerprints ([`presence::fingerprint`]) of the keys `ks` holds in `key`'s bucket (a
/// keyspace keyed by [`keys::short_message`]).
fn bucket_fingerprints(ks: &Keyspace, key: &schemas::MessageKey) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for guard in ks.prefix(keys::short_bucket(key.tenant, key.campaign, key.bucket)) {
        // The key's 96 bits of the id are all a fingerprint reads.
        let (_, _, _, id) = parse_message_key(&guard.key()?)?;
        out.push(presence::fingerprint(id));
    }
    Ok(out)
}

/// What a [`keys::short_message`] key holds ([`keys::parse_short_message`]); a key of another
/// shape is a corrupt store.
fn parse_message_key(key: &[u8]) -> Result<(schemas::TenantId, schemas::CampaignId, u32, u128)> {
    keys::parse_short_message(key).ok_or_else(|| schemas::Error::Decode("a message key of another shape".into()).into())
}

/// A per-message keyspace's value: the 32 bits of message `id` that its key leaves out
/// ([`keys::id_check`]), then `encoded`.
fn with_check(id: schemas::MessageId, encoded: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + encoded.len());
    bytes.extend_from_slice(&keys::id_check(id).to_be_bytes());
    bytes.extend_from_slice(encoded);
    bytes
}

/// Writes `value` for message `key` in a keyspace keyed by [`keys::short_message`]
/// ([`with_check`]).
fn put_message<T: Serialize>(
    batch: &mut pipeline::embedded::Batch,
    ks: &Keyspace,
    key: &schemas::MessageKey,
    value: &T,
) -> Result<()> {
    batch.insert(ks, keys::short_message(key), with_check(key.id, &codec::encode(value)?));
    Ok(())
}

/// Reads message `key`'s value from a keyspace keyed by [`keys::short_message`].
fn get_message<T: DeserializeOwned>(ks: &Keyspace, key: &schemas::MessageKey) -> Result<Option<T>> {
    match ks.get(keys::short_message(key))? {
        Some(bytes) => Ok(Some(decode_message(&bytes, key.id)?)),
        None => Ok(None),
    }
}

/// Decodes a value written by [`put_message`] for message `id`. A value whose check is not
/// `id`'s belongs to another message with the same key: an error, never taken for this one's.
fn decode_message<T: DeserializeOwned>(bytes: &[u8], id: schemas::MessageId) -> Result<T> {
    let (check, value) = split_check(bytes)?;
    if check != keys::id_check(id) {
        return Err(crate::Error::KeyCollision { id: id.to_string() });
    }
    Ok(codec::decode(value)?)
}

/// A [`put_message`] value's check and encoded value.
fn split_check(bytes: &[u8]) -> Result<(u32, &[u8])> {
    match bytes.split_first_chunk::<4>() {
        Some((check, value)) => Ok((u32::from_be_bytes(*check), value)),
        None => Err(schemas::Error::Decode("a message value without its id check".into()).into()),
    }
}

fn put<T: Serialize>(batch: &mut pipeline::embedded::Batch, ks: &Keyspace, key: Vec<u8>, value: &T) -> Result<()> {
    batch.insert(ks, key, codec::encode(value)?);
    Ok(())
}

/// Decodes every value whose key starts with `prefix`, from `start` on, up to `limit` values.
fn scan<T: DeserializeOwned>(
    ks: &Keyspace,
    prefix: &[u8],
    start: Vec<u8>,
    limit: usize,
) -> Result<Vec<(fjall::UserKey, T)>> {
    let mut out = Vec::new();
    let end = keys::prefix_end(prefix);
    let iter = match &end {
        Some(end) => ks.range(start..end.clone()),
        None => ks.range(start..),
    };
    for guard in iter.take(limit) {
        let (k, v) = guard.into_inner()?;
        out.push((k, codec::decode(&v)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
