//! Which per-message keys of a bucket exist, kept in memory so that reading a key that was
//! never written — a message's first claim, its first log row — does not search the LSM.
//!
//! Such a read is the common case (every message is claimed and logged once for the first
//! time), and in an LSM it is the expensive one: an absent key is looked for in the memtables,
//! in every L0 table's bloom filter and in one table per level. Measured before this module at
//! 1M x 4: ~16% of the engine's CPU samples, half in deliver's claims, half in reconcile's rows.
//!
//! **Exactness.** A bucket's set is *loaded* from the store (one prefix scan of the bucket, at
//! most [`crate::BUCKET_SIZE`] keys) and from then on every write of a key in it is added here
//! before it is committed. So "absent" is only answered for a loaded bucket whose set lacks the
//! key, and then the store cannot hold it. The other answers, "may exist" and "not loaded", send
//! the caller to the store as before: a 32-bit fingerprint that collides, a write that failed,
//! or a key deleted behind this set's back (a tenant purge) only costs that read.
//!
//! **Loaded only where keys are missing.** A bucket is loaded after a store read found a key of
//! it absent, never on a read that found its key: so a bucket whose keys all exist (reconcile
//! reading rows to apply receipts to, long after their first write) costs no scan and does not
//! push out the buckets being written for the first time. Unloaded, a bucket is held only while
//! a write to it is in flight (so that a load racing that write keeps its keys).
//!
//! **Bounded** by [`Presence::MAX_IDS`] fingerprints: past it idle buckets are dropped (and
//! loaded again after their next miss), never one with a write in flight — dropping that one and
//! loading it before its commit lands would miss the key for good. The bound is shared between
//! tenants fairly: buckets of tenants holding more than an equal share go first (least recently
//! used first), so a tenant running many campaigns at once drops its own buckets, not another's
//! within its share. What a dropped bucket costs is one prefix scan, never a wrong answer.
//!
//! It is not a cache of values, and it is not shared between processes: it is coherent only
//! because every write of its keyspace goes through this process's store, and (for message
//! rows) because each campaign has one writer at a time (reconcile's contract).

use crate::Result;
use schemas::{CampaignId, MessageKey, TenantId};
// foldhash: looked up once or more per message (see `inflight`).
use foldhash::{HashMap, HashMapExt, HashSet};

type BucketId = (TenantId, CampaignId, u32);

/// A message id's top 96 bits — what a stored key keeps of it (`keys::short_message`) —
/// folded to 32 (ids are 128-bit hashes).
pub(super) fn fingerprint(id: u128) -> u32 {
    let x = id >> 32;
    (x ^ (x >> 32) ^ (x >> 64)) as u32
}

fn bucket_of(key: &MessageKey) -> BucketId {
    (key.tenant, key.campaign, key.bucket)
}

#[derive(Default)]
struct Bucket {
    /// The store's keys of this bucket have been read into `ids`.
    loaded: bool,
    ids: HashSet<u32>,
    /// Writes whose keys are in `ids` but may not be committed yet.
    writing: u32,
    used: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct Presence {
    buckets: HashMap<BucketId, Bucket>,
    held: usize,
    clock: u64,
}

impl Presence {
    /// Fingerprints held at most (~8 bytes each in the set, ~1.3 MiB): 16 full buckets. A
    /// campaign's chunks are rendered on every partition, so it writes first keys in several
    /// buckets at once: at 1M x 4 a bound of 80,000 reloaded ~1.5M fingerprints a run, this one
    /// ~0.3M (`bucket_fingerprints` was 6.5% of the CPU when every read loaded).
    pub const MAX_IDS: usize = 160_000;

    /// `Some(false)` only when no key `key` is in the store for certain, `Some(true)` when it
    /// may be there, `None` when its bucket is not loaded. After `None`, the caller reads the
    /// store and, when the key is not there, [`Self::load`]s the bucket.
    pub fn may_exist(&mut self, key: &MessageKey) -> Option<bool> {
        self.clock += 1;
        let bucket = self.buckets.get_mut(&bucket_of(key)).filter(|b| b.loaded)?;
        bucket.used = self.clock;
        Some(bucket.ids.contains(&fingerprint(key.id.0)))
    }

    /// Loads `key`'s bucket unless it is loaded: `load` lists the fingerprints of the keys the
    /// store holds in it. Called after a store read found `key` absent.
    pub fn load(&mut self, key: &MessageKey, load: impl FnOnce() -> Result<Vec<u32>>) -> Result<()> {
        self.clock += 1;
        let bucket = self.buckets.entry(bucket_of(key)).or_default();
        bucket.used = self.clock;
        if !bucket.loaded {
            let before = bucket.ids.len();
            bucket.ids.extend(load()?);
            bucket.loaded = true;
            self.held += bucket.ids.len() - before;
        }
        self.trim();
        Ok(())
    }

    /// Records that `keys` are about to be written; [`Self::written`] must follow with the same
    /// keys once the write is committed or has failed.
    pub fn writing(&mut self, keys: &[MessageKey]) {
        self.clock += 1;
        for key in keys {
            let bucket = self.buckets.entry(bucket_of(key)).or_default();
            bucket.used = self.clock;
            bucket.writing += 1;
            if bucket.ids.insert(fingerprint(key.id.0)) {
                self.held += 1;
            }
        }
        self.trim();
    }

    /// Ends a [`Self::writing`]. A bucket that is not loaded is let go once no write to it is
    /// in flight: its keys are in the store for the load that may come.
    pub fn written(&mut self, keys: &[MessageKey]) {
        for key in keys {
            let id = bucket_of(key);
            let Some(bucket) = self.buckets.get_mut(&id) else { continue };
            bucket.writing = bucket.writing.saturating_sub(1);
            if bucket.writing == 0 && !bucket.loaded {
                self.held -= bucket.ids.len();
                self.buckets.remove(&id);
            }
        }
    }

    /// Drops buckets without writes in flight until a quarter is free: first those of tenants
    /// over an equal share of the bound, then the rest, least recently used first in each.
    fn trim(&mut self) {
        if self.held <= Self::MAX_IDS {
            return;
        }
        let mut per_tenant: HashMap<TenantId, usize> = HashMap::new();
        for ((tenant, _, _), bucket) in &self.buckets {
            *per_tenant.entry(*tenant).or_default() += bucket.ids.len();
        }
        let share = Self::MAX_IDS / per_tenant.len().max(1);
        let mut idle: Vec<(bool, u64, BucketId)> = self
            .buckets
            .iter()
            .filter(|(_, b)| b.writing == 0)
            .map(|(id, b)| (per_tenant[&id.0] <= share, b.used, *id))
            .collect();
        idle.sort_unstable();
        for (_, _, id) in idle {
            if self.held <= Self::MAX_IDS / 4 * 3 {
                break;
            }
            if let Some(bucket) = self.buckets.remove(&id) {
                self.held -= bucket.ids.len();
            }
        }
    }

    /// Fingerprints held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::MessageId;

    fn key(bucket: u32, n: u128) -> MessageKey {
        tenant_key(1, bucket, n)
    }

    fn tenant_key(tenant: u64, bucket: u32, n: u128) -> MessageKey {
        MessageKey { tenant: TenantId(tenant), campaign: CampaignId(2), bucket, id: MessageId(n << 70 | n) }
    }

    fn fingerprints(keys: impl IntoIterator<Item = MessageKey>) -> Result<Vec<u32>> {
        Ok(keys.into_iter().map(|k| fingerprint(k.id.0)).collect())
    }

    /// What the store's callers do: read the store unless the set says absent, load after a
    /// miss. `store` is what the store holds; returns whether the key was found and whether the
    /// read loaded its bucket.
    fn read(p: &mut Presence, key: &MessageKey, store: &[MessageKey]) -> (bool, bool) {
        match p.may_exist(key) {
            Some(false) => (false, false),
            Some(true) => (store.contains(key), false),
            None if store.contains(key) => (true, false),
            None => {
                let held = store.iter().filter(|k| bucket_of(k) == bucket_of(key)).copied();
                p.load(key, || fingerprints(held)).unwrap();
                (false, true)
            }
        }
    }

    #[test]
    fn answers_absent_only_for_a_loaded_bucket_that_lacks_the_key() {
        let mut p = Presence::default();
        let stored = [key(0, 1)];
        assert_eq!(p.may_exist(&key(0, 1)), None, "nothing loaded yet");
        assert_eq!(read(&mut p, &key(0, 1), &stored), (true, false), "found in the store: no load");
        assert_eq!(read(&mut p, &key(0, 2), &stored), (false, true), "a miss loads the bucket");
        assert_eq!(p.may_exist(&key(0, 1)), Some(true), "loaded from the store");
        assert_eq!(p.may_exist(&key(0, 2)), Some(false), "never written");
        p.writing(&[key(0, 2)]);
        assert_eq!(p.may_exist(&key(0, 2)), Some(true), "being written");
        p.written(&[key(0, 2)]);
        assert_eq!(p.may_exist(&key(0, 2)), Some(true), "written");
        p.load(&key(0, 3), || panic!("loaded once")).unwrap();
        assert_eq!(p.may_exist(&key(1, 1)), None, "another bucket loads its own");
        assert_eq!(p.held(), 2);
    }

    #[test]
    fn a_write_before_the_load_survives_it() {
        let mut p = Presence::default();
        p.writing(&[key(0, 5)]);
        // The load does not see the uncommitted key; the set must keep it anyway.
        p.load(&key(0, 6), || Ok(Vec::new())).unwrap();
        p.written(&[key(0, 5)]);
        assert_eq!(p.may_exist(&key(0, 5)), Some(true));
        assert_eq!(p.may_exist(&key(0, 6)), Some(false));
    }

    #[test]
    fn an_unloaded_bucket_is_held_only_while_written() {
        let mut p = Presence::default();
        // Rows updated long after their first write (receipts) neither load nor stay.
        p.writing(&[key(0, 1), key(0, 2)]);
        assert_eq!(p.held(), 2);
        p.written(&[key(0, 1), key(0, 2)]);
        assert_eq!(p.held(), 0);
        assert_eq!(p.may_exist(&key(0, 1)), None, "still not loaded: the store answers");
    }

    #[test]
    fn drops_idle_buckets_past_the_bound_but_never_one_being_written() {
        let mut p = Presence::default();
        let per_bucket = 10_000u128;
        p.load(&key(0, 1), || Ok(Vec::new())).unwrap();
        p.writing(&[key(0, 1)]);
        let full = |b: u32| move || fingerprints((0..per_bucket).map(|i| key(b, i + 100)));
        for b in 1..=(Presence::MAX_IDS as u128 / per_bucket + 1) as u32 {
            p.load(&key(b, 0), full(b)).unwrap();
        }
        assert!(p.held() <= Presence::MAX_IDS, "bounded: {}", p.held());
        assert_eq!(p.may_exist(&key(0, 1)), Some(true), "bucket 0 has a write in flight: kept");
        assert_eq!(p.may_exist(&key(1, 0)), None, "the least recently used bucket was dropped");
    }

    #[test]
    fn a_tenant_over_its_share_drops_its_own_buckets_first() {
        let mut p = Presence::default();
        let per_bucket = 10_000u128;
        let full = |t: u64, b: u32| move || fingerprints((0..per_bucket).map(|i| tenant_key(t, b, i + 100)));
        // The victim loads one bucket first, so it is the least recently used from then on.
        p.load(&tenant_key(7, 0, 1), full(7, 0)).unwrap();
        // A noisy tenant loads more buckets than the whole bound holds.
        for b in 0..(Presence::MAX_IDS as u128 / per_bucket * 2) as u32 {
            p.load(&tenant_key(1, b, 0), full(1, b)).unwrap();
        }
        assert!(p.held() <= Presence::MAX_IDS, "bounded: {}", p.held());
        assert_eq!(p.may_exist(&tenant_key(7, 0, 1)), Some(false), "the victim's bucket is kept");
        assert_eq!(p.may_exist(&tenant_key(1, 0, 0)), None, "the noisy tenant's oldest bucket was dropped");
    }
}
