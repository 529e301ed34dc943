//! Counts events in a sliding window (e.g. calls per sender in the last second): exact, not
//! bucketed, so "at most N in any window" is checked as a provider would.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SlidingWindow {
    span: Duration,
    events: VecDeque<Instant>,
    /// The most events ever seen in one window.
    max: usize,
}

/// A one-second window (calls per second, the common case).
impl Default for SlidingWindow {
    fn default() -> Self {
        Self::new(Duration::from_secs(1))
    }
}

impl SlidingWindow {
    pub fn new(span: Duration) -> Self {
        Self { span, events: VecDeque::new(), max: 0 }
    }

    fn expire(&mut self, now: Instant) {
        while self.events.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.span) {
            self.events.pop_front();
        }
    }

    /// Events in the window ending now.
    pub fn count(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.events.len()
    }

    /// Records an event; returns the events in the window ending now, this one included.
    pub fn record(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.events.push_back(now);
        self.max = self.max.max(self.events.len());
        self.events.len()
    }

    /// Records an event only if the window holds fewer than `limit`; whether it did.
    pub fn admit(&mut self, now: Instant, limit: usize) -> bool {
        if self.count(now) >= limit {
            return false;
        }
        self.record(now);
        true
    }

    /// The most events seen in any window so far.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_span_only() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(Duration::from_secs(1));
        for ms in [0, 100, 200] {
            w.record(t0 + Duration::from_millis(ms));
        }
        assert_eq!(w.count(t0 + Duration::from_millis(999)), 3);
        assert_eq!(w.count(t0 + Duration::from_millis(1_100)), 1);
        assert!(w.admit(t0 + Duration::from_millis(1_100), 2));
        assert!(!w.admit(t0 + Duration::from_millis(1_150), 2));
        assert_eq!(w.max(), 3);
    }
}
