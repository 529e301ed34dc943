//! The claims of calls in flight, kept in memory so the compare-and-set that settles a call
//! (`InFlight` → `Done` or `Retrying`) does not search the LSM for the claim this process just
//! wrote.
//!
//! It is a cache, coherent because every claim read and write in the embedded deployment goes
//! through [`super::state::EmbeddedState`] under the store's `cas_lock`; it is not a second
//! source of truth (a miss reads the store). It holds `InFlight` claims only (a settled claim is
//! dropped from it), so it stays about as large as the calls in flight and cache-friendly.
//! Bounded anyway: [`schemas::helpers::Generations`] of [`RecentClaims::GENERATION`] entries.

use crate::model::Claim;
use schemas::helpers::Generations;
use schemas::{CampaignId, MessageKey, TenantId};

/// A claim's identity (the bucket is not part of it).
type ClaimId = (TenantId, CampaignId, u128);

/// See the module docs.
pub struct RecentClaims {
    seen: Generations<ClaimId, Option<Claim>>,
}

impl Default for RecentClaims {
    fn default() -> Self {
        Self { seen: Generations::new(Self::GENERATION) }
    }
}

fn id(key: &MessageKey) -> ClaimId {
    (key.tenant, key.campaign, key.id.0)
}

impl RecentClaims {
    /// Entries per generation (about 100 bytes each).
    pub const GENERATION: usize = 32_768;

    /// The claim at `key` if known: `Some(None)` means known to be absent.
    pub fn get(&self, key: &MessageKey) -> Option<Option<Claim>> {
        self.seen.get(&id(key))
    }

    /// Records what the store now holds at `key`.
    pub fn put(&mut self, key: &MessageKey, claim: Option<Claim>) {
        self.seen.put(id(key), claim);
    }

    /// Forgets `key` (the store's claim is no longer worth keeping here).
    pub fn remove(&mut self, key: &MessageKey) {
        self.seen.remove(&id(key));
    }

    /// Forgets everything (after claims were removed behind the cache's back, e.g. a purge).
    pub fn clear(&mut self) {
        self.seen.clear();
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
