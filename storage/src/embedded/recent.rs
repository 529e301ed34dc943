//! The claims of calls in flight, kept in memory so the compare-and-set that settles a call
//! (`InFlight` → `Done` or `Retrying`) does not search the LSM for the claim this process just
//! wrote.
//!
//! It is a cache, coherent because every claim read and write in the embedded deployment goes
//! through [`super::state::EmbeddedState`] under the store's `cas_lock`; it is not a second
//! source of truth (a miss reads the store). It holds `InFlight` claims only (a settled claim is
//! dropped from it), so it stays about as large as the calls in flight and cache-friendly.
//! Bounded anyway: two generations of at most [`RecentClaims::GENERATION`] entries each; when
//! the current one fills, the older is dropped.

use crate::model::Claim;
use schemas::{CampaignId, MessageKey, TenantId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A claim's identity (the bucket is not part of it).
type ClaimId = (TenantId, CampaignId, u128);

/// Message ids are already hashes (xxh3-128): mixing the words is enough, no SipHash needed.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, word: u128) {
        self.write_u64(word as u64);
        self.write_u64((word >> 64) as u64);
    }
}

type Map = HashMap<ClaimId, Option<Claim>, BuildHasherDefault<IdHasher>>;

/// See the module docs.
#[derive(Default)]
pub struct RecentClaims {
    current: Map,
    previous: Map,
}

fn id(key: &MessageKey) -> ClaimId {
    (key.tenant, key.campaign, key.id.0)
}

impl RecentClaims {
    /// Entries per generation (about 100 bytes each).
    pub const GENERATION: usize = 32_768;

    /// The claim at `key` if known: `Some(None)` means known to be absent.
    pub fn get(&self, key: &MessageKey) -> Option<Option<Claim>> {
        let id = id(key);
        self.current.get(&id).or_else(|| self.previous.get(&id)).cloned()
    }

    /// Records what the store now holds at `key`.
    pub fn put(&mut self, key: &MessageKey, claim: Option<Claim>) {
        let id = id(key);
        if self.current.len() >= Self::GENERATION && !self.current.contains_key(&id) {
            // The older generation's table is reused: no fresh pages to fault in per rotation.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(id, claim);
    }

    /// Forgets `key` (the store's claim is no longer worth keeping here).
    pub fn remove(&mut self, key: &MessageKey) {
        let id = id(key);
        self.current.remove(&id);
        self.previous.remove(&id);
    }

    /// Forgets everything (after claims were removed behind the cache's back, e.g. a purge).
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use schemas::MessageId;

    fn claim(attempt: u32) -> Claim {
        Claim::InFlight { attempt, at_ms: 1 }
    }

    fn key(n: u32) -> MessageKey {
        MessageKey { tenant: TenantId(1), campaign: CampaignId(2), bucket: 0, id: MessageId(u128::from(n) << 70) }
    }

    #[test]
    fn keeps_two_generations_and_forgets_the_oldest() {
        let mut recent = RecentClaims::default();
        let absent = key(u32::MAX);
        for i in 0..RecentClaims::GENERATION as u32 {
            recent.put(&key(i), Some(claim(i)));
        }
        recent.put(&absent, None);
        assert_eq!(recent.get(&key(0)), Some(Some(claim(0))), "the previous generation is still read");
        assert_eq!(recent.get(&absent), Some(None), "absence is remembered");
        let other = MessageKey { campaign: CampaignId(3), ..key(0) };
        assert_eq!(recent.get(&other), None, "another campaign's message is another claim");
        for i in 0..RecentClaims::GENERATION as u32 {
            recent.put(&key(i + 1_000_000), None);
        }
        assert_eq!(recent.get(&key(0)), None, "two generations later it is forgotten");
        recent.put(&absent, Some(claim(1)));
        recent.remove(&absent);
        assert_eq!(recent.get(&absent), None, "removed");
        recent.put(&absent, None);
        recent.clear();
        assert_eq!(recent.get(&absent), None);
    }
}
