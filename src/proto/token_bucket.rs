//! A token bucket: `rate` tokens a second, holding at most `burst`.
//!
//! Used for message rates (signaling) and byte rates. Time is passed in as
//! a [`Duration`] since any fixed origin the caller picks, so the bucket is
//! testable with fake time; a clock that goes backwards refills nothing.
//! Tokens are kept in millionths so that slow rates still refill smoothly
//! without floating point.

use std::time::Duration;

const SCALE: u128 = 1_000_000;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens a second.
    rate: u64,
    /// Capacity, in millionths of a token.
    burst: u128,
    /// Current content, in millionths of a token.
    level: u128,
    /// Time of the last refill.
    last: Duration,
}

impl TokenBucket {
    /// A full bucket refilling `rate` tokens a second up to `burst`.
    pub fn new(rate: u64, burst: u64, now: Duration) -> TokenBucket {
        let burst = u128::from(burst) * SCALE;
        TokenBucket {
            rate,
            burst,
            level: burst,
            last: now,
        }
    }

    /// Takes `n` tokens if the bucket holds them; otherwise takes nothing
    /// and returns false.
    pub fn try_take(&mut self, n: u64, now: Duration) -> bool {
        self.refill(now);
        let want = u128::from(n) * SCALE;
        if self.level >= want {
            self.level -= want;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Duration) {
        if let Some(elapsed) = now.checked_sub(self.last) {
            let added = elapsed.as_micros().saturating_mul(u128::from(self.rate));
            self.level = self.level.saturating_add(added).min(self.burst);
            self.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn starts_full_and_refuses_beyond_the_burst() {
        let mut b = TokenBucket::new(10, 20, Duration::ZERO);
        assert!((0..20).all(|_| b.try_take(1, Duration::ZERO)));
        assert!(!b.try_take(1, Duration::ZERO));
    }

    #[test]
    fn refills_at_the_rate_and_caps_at_the_burst() {
        let mut b = TokenBucket::new(10, 20, Duration::ZERO);
        assert!(b.try_take(20, Duration::ZERO));
        assert!(!b.try_take(1, Duration::from_millis(50)));
        assert!(b.try_take(1, Duration::from_millis(100)));
        // A long pause refills to the burst, not beyond.
        assert!(b.try_take(20, 100 * S));
        assert!(!b.try_take(1, 100 * S));
    }

    #[test]
    fn a_refused_take_costs_nothing() {
        let mut b = TokenBucket::new(1, 5, Duration::ZERO);
        assert!(!b.try_take(6, Duration::ZERO));
        assert!(b.try_take(5, Duration::ZERO));
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(1000, 1, 10 * S);
        assert!(b.try_take(1, 10 * S));
        assert!(!b.try_take(1, S));
        assert!(b.try_take(1, 10 * S + Duration::from_millis(1)));
    }

    #[test]
    fn slow_rates_refill_smoothly() {
        let mut b = TokenBucket::new(1, 1, Duration::ZERO);
        assert!(b.try_take(1, Duration::ZERO));
        assert!(!b.try_take(1, Duration::from_millis(999)));
        assert!(b.try_take(1, S));
    }
}
