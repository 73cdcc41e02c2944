//! A token bucket: `rate` tokens a second, holding at most `burst`.
//!
//! Used for message rates (signaling) and byte rates (relayed traffic per
//! allocation and per user). Time is passed in, so the bucket is testable
//! with fake time; a clock that goes backwards refills nothing. Tokens are
//! kept in millionths so that slow rates still refill smoothly without
//! floating point.

use std::time::{Duration, Instant};

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
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling `rate` tokens a second up to `burst`.
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        let burst = u128::from(burst) * SCALE;
        TokenBucket {
            rate,
            burst,
            level: burst,
            last: now,
        }
    }

    /// True if the bucket holds `n` tokens (taking none).
    pub fn has(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        self.level >= u128::from(n) * SCALE
    }

    /// Takes `n` tokens if the bucket holds them; otherwise takes nothing
    /// and returns false.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        if !self.has(n, now) {
            return false;
        }
        self.level -= u128::from(n) * SCALE;
        true
    }

    /// How long from `now` until the bucket holds `n` tokens: zero if it
    /// does now. For `n` beyond the burst, the time until it is full (it
    /// will never hold `n`), so a caller must keep `n` within the burst.
    pub fn time_until(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        let wanted = (u128::from(n) * SCALE).min(self.burst);
        let missing = wanted.saturating_sub(self.level);
        if missing == 0 || self.rate == 0 {
            return Duration::ZERO;
        }
        // Millionths of a token come in at `rate` a microsecond.
        let micros = missing.div_ceil(u128::from(self.rate));
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn refill(&mut self, now: Instant) {
        if let Some(elapsed) = now.checked_duration_since(self.last) {
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

    fn origin() -> Instant {
        // The one real clock read: an arbitrary origin for fake time.
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn starts_full_and_refuses_beyond_the_burst() {
        let t = origin();
        let mut b = TokenBucket::new(10, 20, t);
        assert!((0..20).all(|_| b.try_take(1, t)));
        assert!(!b.try_take(1, t));
    }

    #[test]
    fn refills_at_the_rate_and_caps_at_the_burst() {
        let t = origin();
        let mut b = TokenBucket::new(10, 20, t);
        assert!(b.try_take(20, t));
        assert!(!b.try_take(1, t + Duration::from_millis(50)));
        assert!(b.try_take(1, t + Duration::from_millis(100)));
        // A long pause refills to the burst, not beyond.
        assert!(b.try_take(20, t + 100 * S));
        assert!(!b.try_take(1, t + 100 * S));
    }

    #[test]
    fn a_refused_take_or_a_look_costs_nothing() {
        let t = origin();
        let mut b = TokenBucket::new(1, 5, t);
        assert!(!b.try_take(6, t));
        assert!(b.has(5, t) && b.has(5, t));
        assert!(b.try_take(5, t));
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let t = origin() + 10 * S;
        let mut b = TokenBucket::new(1000, 1, t);
        assert!(b.try_take(1, t));
        assert!(!b.try_take(1, t - 9 * S));
        assert!(b.try_take(1, t + Duration::from_millis(1)));
    }

    #[test]
    fn slow_rates_refill_smoothly() {
        let t = origin();
        let mut b = TokenBucket::new(1, 1, t);
        assert!(b.try_take(1, t));
        assert!(!b.try_take(1, t + Duration::from_millis(999)));
        assert!(b.try_take(1, t + S));
    }

    #[test]
    fn time_until_says_when_the_tokens_are_there() {
        let t = origin();
        let mut b = TokenBucket::new(32_768, 16_384, t);
        assert_eq!(b.time_until(16_384, t), Duration::ZERO);
        assert!(b.try_take(16_384, t));
        assert_eq!(b.time_until(8_192, t), Duration::from_millis(250));
        let later = t + Duration::from_millis(100);
        assert_eq!(b.time_until(8_192, later), Duration::from_millis(150));
        assert!(!b.try_take(8_192, t + Duration::from_millis(249)));
        assert!(b.try_take(8_192, t + Duration::from_millis(250)));
        // Beyond the burst: the time until the bucket is full.
        assert_eq!(
            b.time_until(1 << 20, t + Duration::from_millis(250)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_byte_rate_passes_its_rate_over_time() {
        // 100 kB/s with a 50 kB burst, offered 1200-byte packets at twice
        // the rate for 10 s: what passes is the burst plus 10 s of rate.
        let t = origin();
        let mut b = TokenBucket::new(100_000, 50_000, t);
        let mut passed = 0u64;
        let step = Duration::from_micros(6_000); // 200 kB/s offered
        for i in 0..10_000u32 / 6 {
            if b.try_take(1200, t + step * i) {
                passed += 1200;
            }
        }
        let expected = 50_000 + 100_000 * 10;
        assert!(passed.abs_diff(expected) <= 1200, "{passed} vs {expected}");
    }
}
