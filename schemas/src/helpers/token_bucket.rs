//! A token bucket on an injected clock: `rate` tokens per second, at most `burst` banked.
//! Tokens accrue from real elapsed time, so a late wake-up loses nothing (a timer that fires
//! a millisecond late still finds that millisecond's tokens).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate_per_s: rate_per_s.max(0.1), burst, tokens: burst, last: now }
    }

    /// A bucket that starts empty: no burst until the holder has been idle.
    pub fn empty(rate_per_s: f64, burst: u32, now: Instant) -> Self {
        Self { tokens: 0.0, ..Self::new(rate_per_s, burst, now) }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        self.last = now;
    }

    /// How long until one token is available (zero: now), taking nothing.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate_per_s)
        }
    }

    /// Changes the refill rate from now on (tokens accrued so far are kept).
    pub fn set_rate(&mut self, rate_per_s: f64, now: Instant) {
        self.refill(now);
        self.rate_per_s = rate_per_s.max(0.1);
    }

    /// Changes the burst (tokens above it are dropped).
    pub fn set_burst(&mut self, burst: u32, now: Instant) {
        self.refill(now);
        self.burst = f64::from(burst.max(1));
        self.tokens = self.tokens.min(self.burst);
    }

    pub fn rate(&self) -> f64 {
        self.rate_per_s
    }

    /// Takes `n` tokens, or says how long until they are available (taking nothing).
    /// Requests above the burst are allowed once the bucket is full, going into debt.
    pub fn take(&mut self, n: u32, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let need = f64::from(n).min(self.burst);
        if self.tokens >= need {
            self.tokens -= f64::from(n);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.rate_per_s))
        }
    }

    /// Takes up to `want` whole tokens, as many as there are now; returns how many, and when
    /// the next one accrues if that was not all.
    pub fn take_up_to(&mut self, want: u32, now: Instant) -> (u32, Duration) {
        self.refill(now);
        let granted = (self.tokens.floor().max(0.0) as u32).min(want);
        self.tokens -= f64::from(granted);
        let next = if granted == want {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / self.rate_per_s)
        };
        (granted, next)
    }

    /// Gives back `n` tokens taken but not used (never above the burst).
    pub fn refund(&mut self, n: u32) {
        self.tokens = (self.tokens + f64::from(n)).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_exceeds_rate_plus_burst_in_any_second() {
        // Against a naive counter: over a simulated 10 s of greedy takes every millisecond, the
        // number granted in any 1 s window stays ≤ rate + burst, and the rate is kept.
        let start = Instant::now();
        let (rate, burst) = (500u32, 50u32);
        let mut bucket = TokenBucket::new(f64::from(rate), burst, start);
        let mut grants = Vec::new();
        for ms in 0..10_000u64 {
            let now = start + Duration::from_millis(ms);
            let (n, _) = bucket.take_up_to(u32::MAX, now);
            grants.extend(std::iter::repeat_n(ms, n as usize));
        }
        let max_window = (0..grants.len())
            .map(|i| grants[i..].iter().take_while(|&&u| u < grants[i] + 1_000).count())
            .max()
            .unwrap_or(0);
        assert!(max_window as u32 <= rate + burst, "window {max_window}");
        assert!(grants.len() as u32 >= rate * 10, "achieved {} of {}", grants.len(), rate * 10);
    }

    #[test]
    fn reports_waits_and_takes_refunds() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, 10, start);
        assert!(bucket.take(10, start).is_ok());
        let wait = bucket.take(5, start).unwrap_err();
        assert!(wait >= Duration::from_millis(49) && wait <= Duration::from_millis(51), "{wait:?}");
        let (n, next) = bucket.take_up_to(3, start + Duration::from_millis(25));
        assert_eq!(n, 2);
        assert!(next > Duration::ZERO && next <= Duration::from_millis(10), "{next:?}");
        bucket.refund(2);
        assert_eq!(bucket.take_up_to(5, start + Duration::from_millis(25)).0, 2);
    }
}
