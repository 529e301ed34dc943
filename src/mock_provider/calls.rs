//! Reading a calls log back: per sender, how many calls, how fast, the busiest second, and
//! whether any message id was accepted twice. Used by `herald bench --provider mock-http` and
//! the acceptance tests; independent of Herald's own state.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct Line {
    ts_ms: u64,
    phone_number_id: String,
    message_id: String,
    wamid: Option<String>,
    error_code: Option<i64>,
}

/// One sender's calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SenderCalls {
    pub calls: u64,
    pub accepted: u64,
    /// Refused calls by error code.
    pub refused: BTreeMap<i64, u64>,
    /// The most calls (accepted or refused) in any 1-second window.
    pub max_1s_window: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    /// Accepted calls per second between the first and the last call.
    pub mean_rate: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CallsSummary {
    pub per_sender: BTreeMap<String, SenderCalls>,
    pub calls: u64,
    pub accepted: u64,
    /// Accepted calls whose message id had been accepted before.
    pub duplicate_message_ids: u64,
}

/// The most timestamps (sorted, ms) within any window of `width_ms`.
pub fn max_window(sorted: &[u64], width_ms: u64) -> u64 {
    let mut start = 0;
    let mut best = 0;
    for (end, &t) in sorted.iter().enumerate() {
        while sorted[start] + width_ms <= t {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best as u64
}

/// Summarizes the calls in `path` with `ts_ms` ≥ `from_ms`.
pub fn analyze(path: &Path, from_ms: u64) -> anyhow::Result<CallsSummary> {
    let file = std::fs::File::open(path)?;
    let mut times: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut summary = CallsSummary::default();
    let mut accepted_ids = HashSet::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let Ok(call) = serde_json::from_str::<Line>(&line) else { continue };
        if call.ts_ms < from_ms {
            continue;
        }
        let sender = summary.per_sender.entry(call.phone_number_id.clone()).or_default();
        sender.calls += 1;
        summary.calls += 1;
        times.entry(call.phone_number_id).or_default().push(call.ts_ms);
        match (call.wamid, call.error_code) {
            (Some(_), _) => {
                sender.accepted += 1;
                summary.accepted += 1;
                if !accepted_ids.insert(call.message_id) {
                    summary.duplicate_message_ids += 1;
                }
            }
            (None, code) => *sender.refused.entry(code.unwrap_or(0)).or_default() += 1,
        }
    }
    for (id, mut ts) in times {
        ts.sort_unstable();
        let Some(sender) = summary.per_sender.get_mut(&id) else { continue };
        sender.max_1s_window = max_window(&ts, 1_000);
        sender.first_ms = ts.first().copied().unwrap_or(0);
        sender.last_ms = ts.last().copied().unwrap_or(0);
        let span = (sender.last_ms - sender.first_ms) as f64 / 1000.0;
        sender.mean_rate = if span > 0.0 { sender.accepted.saturating_sub(1) as f64 / span } else { 0.0 };
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(max_window(&[], 1_000), 0);
        assert_eq!(max_window(&[0, 999, 1_000, 1_001, 1_998], 1_000), 4);
        assert_eq!(max_window(&[5, 5, 5], 1_000), 3);
    }
}
