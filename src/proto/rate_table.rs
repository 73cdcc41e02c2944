//! Rates per key (a source address, a username) in fixed memory: a keyed
//! hash picks one of a fixed number of token buckets, so the table never
//! grows however many keys an attacker invents, and nothing is ever
//! evicted. Keys that share a slot share its budget; the hash key comes
//! from the driver's seed, so an attacker cannot aim at a chosen victim's
//! slot from outside.
//!
//! For the unauthenticated paths (challenges, failed logins), never per
//! relayed packet: a lookup costs one HMAC.

use std::time::Instant;

use ring::hmac;

use super::token_bucket::TokenBucket;

pub struct RateTable {
    key: hmac::Key,
    rate: u64,
    burst: u64,
    /// A slot is filled on first use, full.
    slots: Box<[Option<TokenBucket>]>,
}

impl RateTable {
    /// `slots` buckets of `rate` tokens a second, each holding at most
    /// `burst`; a `rate` of 0 means no limit.
    pub fn new(seed: &[u8], slots: usize, rate: u64, burst: u64) -> RateTable {
        RateTable {
            key: hmac::Key::new(hmac::HMAC_SHA256, seed),
            rate,
            burst,
            slots: (0..slots.max(1)).map(|_| None).collect(),
        }
    }

    /// New rates (a reload); the buckets start over, full.
    pub fn set_rate(&mut self, rate: u64, burst: u64) {
        if (rate, burst) != (self.rate, self.burst) {
            (self.rate, self.burst) = (rate, burst);
            self.slots.iter_mut().for_each(|slot| *slot = None);
        }
    }

    /// Takes `n` tokens from `key`'s bucket if it holds them.
    pub fn try_take(&mut self, key: &[u8], n: u64, now: Instant) -> bool {
        self.bucket(key, now).is_none_or(|bucket| bucket.try_take(n, now))
    }

    /// True if `key`'s bucket holds `n` tokens (taking none).
    pub fn has(&mut self, key: &[u8], n: u64, now: Instant) -> bool {
        self.bucket(key, now).is_none_or(|bucket| bucket.has(n, now))
    }

    /// `key`'s bucket; `None` when there is no limit.
    fn bucket(&mut self, key: &[u8], now: Instant) -> Option<&mut TokenBucket> {
        if self.rate == 0 {
            return None;
        }
        let tag = hmac::sign(&self.key, key);
        let mut index = [0u8; 8];
        index.copy_from_slice(&tag.as_ref()[..8]);
        let slot = (u64::from_le_bytes(index) % self.slots.len() as u64) as usize;
        let (rate, burst) = (self.rate, self.burst);
        Some(self.slots[slot].get_or_insert_with(|| TokenBucket::new(rate, burst, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_key_has_its_own_budget_that_refills_and_zero_means_unlimited() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut table = RateTable::new(b"seed", 1024, 100, 300);
        assert!(table.try_take(b"a", 300, t0));
        assert!(!table.try_take(b"a", 1, t0));
        assert!(table.try_take(b"b", 300, t0), "another key, another slot");
        assert!(table.try_take(b"a", 100, t0 + Duration::from_secs(1)));
        table.set_rate(0, 0);
        assert!((0..10).all(|_| table.try_take(b"a", 1_000_000, t0)));
    }

    #[test]
    fn memory_is_fixed_whatever_the_number_of_keys() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut table = RateTable::new(b"seed", 16, 1, 1);
        for i in 0u32..10_000 {
            table.try_take(&i.to_be_bytes(), 1, t0);
        }
        assert_eq!(table.slots.len(), 16);
        // Sixteen slots, ten thousand keys: every slot is spent.
        assert!(table.slots.iter().all(|s| s.is_some()));
        assert!((0u32..16).all(|i| !table.try_take(&(20_000 + i).to_be_bytes(), 1, t0)));
    }
}
