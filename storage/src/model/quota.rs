//! The messaging-tier quota ledger: messages released per time slot over a rolling window,
//! kept in the shared state and updated only through [`QuotaLedger::reserve`] and
//! [`QuotaLedger::restamp`] (the same rule in every backend).

use serde::{Deserialize, Serialize};

/// Messages released per time slot over a rolling window (the WhatsApp messaging tier).
/// Every message counts as a unique user, which never undercounts (no overshoot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLedger {
    /// `(slot start ms, messages)`, oldest first.
    pub slots: Vec<(u64, u64)>,
}

/// What a quota reservation granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaGrant {
    pub granted: u64,
    /// When more budget frees up, if not everything was granted.
    pub resume_at_ms: Option<u64>,
}

impl QuotaLedger {
    /// Moves up to `n` counts from the oldest slots into the slot of `now_ms`.
    pub fn restamp(&mut self, n: u64, now_ms: u64) {
        let mut moved = 0;
        for (start, count) in self.slots.iter_mut() {
            if moved == n || *start >= now_ms {
                break;
            }
            let take = (*count).min(n - moved);
            *count -= take;
            moved += take;
        }
        self.slots.retain(|(_, count)| *count > 0);
        self.add(now_ms, moved);
    }

    /// Adds `n` counts stamped `at`, keeping slots in time order.
    fn add(&mut self, at: u64, n: u64) {
        if n == 0 {
            return;
        }
        match self.slots.iter().position(|(start, _)| *start >= at) {
            Some(i) if self.slots[i].0 == at => self.slots[i].1 += n,
            Some(i) => self.slots.insert(i, (at, n)),
            None => self.slots.push((at, n)),
        }
    }

    /// Reserves up to `want` of `limit` per `window_ms` at `now_ms`.
    pub fn reserve(&mut self, limit: u64, window_ms: u64, want: u64, now_ms: u64) -> QuotaGrant {
        let slot_ms = (window_ms / 1_000).max(1);
        self.slots.retain(|(start, _)| start + slot_ms + window_ms > now_ms);
        let used: u64 = self.slots.iter().map(|(_, n)| n).sum();
        let granted = want.min(limit.saturating_sub(used));
        // Grouped by slot (rounded down; expiry adds the slot back, so no count ends early).
        self.add(now_ms - now_ms % slot_ms, granted);
        let resume_at_ms = (granted < want)
            .then(|| self.slots.first().map(|(start, _)| start + slot_ms + window_ms).unwrap_or(now_ms));
        QuotaGrant { granted, resume_at_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_grants_up_to_the_limit_and_frees_after_the_window() {
        let mut ledger = QuotaLedger::default();
        let window = 10_000;
        let g = ledger.reserve(100, window, 60, 1_000);
        assert_eq!((g.granted, g.resume_at_ms), (60, None));
        let g = ledger.reserve(100, window, 60, 2_000);
        assert_eq!(g.granted, 40);
        let resume = g.resume_at_ms.unwrap();
        assert!((11_000..=11_020).contains(&resume), "{resume}");
        assert_eq!(ledger.reserve(100, window, 1, resume - 1).granted, 0);
        // The first 60 expire; the 40 from t=2000 still count.
        assert_eq!(ledger.reserve(100, window, 100, resume).granted, 60);
    }

    #[test]
    fn restamped_counts_expire_from_the_send_time() {
        let mut ledger = QuotaLedger::default();
        let window = 10_000;
        assert_eq!(ledger.reserve(10, window, 10, 0).granted, 10);
        // Released at 0, sent at 5 s: they count until 15 s, not 10 s.
        ledger.restamp(10, 5_000);
        assert_eq!(ledger.reserve(10, window, 10, 12_000).granted, 0);
        assert_eq!(ledger.reserve(10, window, 10, 15_020).granted, 10);
    }
}
