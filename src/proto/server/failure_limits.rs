//! Failed authentications, limited in fixed memory ([`RateTable`]) so that
//! guessing a password (or a shared secret's output) runs at a minute's
//! budget at most, without one failing client locking the others out.
//!
//! Three budgets, each refilling over a minute:
//! - per source address ([`PER_SOURCE`] failures): an address that keeps
//!   failing, on any usernames, is refused;
//! - per source and username ([`PER_PAIR`]): one address gets a few
//!   guesses at one username, then is refused for it. A client left with
//!   a stale password (it retries for ever) spends this, not the
//!   username's budget;
//! - per username ([`PER_USERNAME`]), spent by every failure: guesses at
//!   one username spread over many addresses get this many a minute in
//!   all, since each address needs a place in it to be looked at.
//!
//! Over any of them a request is refused with 401 without a look at its
//! credentials. The exception that keeps honest users in when the
//! username's budget is spent (many stale clients, or someone guessing
//! from many addresses): an address that authenticated as that username
//! within [`TRUSTED_FOR`] is not held to the username's budget, only to
//! its own. Those successes are kept in a fixed table too
//! ([`RecentSuccesses`]); one evicted by a collision only loses the
//! exception. What is left: a guesser with more than `PER_USERNAME /
//! PER_PAIR` addresses keeps a username's *new* clients (addresses that
//! never authenticated as it) out while it guesses (SECURITY.md,
//! "Authentication").

use std::time::{Duration, Instant};

use ring::hmac;

use crate::proto::rate_table::RateTable;

/// Failures a minute, and at once, from one source address.
pub const PER_SOURCE: u64 = 60;
/// Failures a minute, and at once, from one source address for one
/// username.
pub const PER_PAIR: u64 = 5;
/// Failures a minute, and at once, for one username from addresses that
/// did not authenticate as it lately.
pub const PER_USERNAME: u64 = 30;
/// How long a success keeps an address exempt from the username's budget.
pub const TRUSTED_FOR: Duration = Duration::from_secs(3600);
/// Tokens a failure costs: rates are in tokens a second, limits in
/// failures a minute.
const COST: u64 = 60;
/// Slots of each table (about 64 KiB a shard each).
const SLOTS: usize = 1024;

pub(super) struct FailureLimits {
    by_source: RateTable,
    by_pair: RateTable,
    by_username: RateTable,
    successes: RecentSuccesses,
}

impl FailureLimits {
    pub(super) fn new(seed: &[u8; 32]) -> FailureLimits {
        let key = |label: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, seed), label);
        let table = |label: &[u8], limit: u64| RateTable::new(key(label).as_ref(), SLOTS, limit, limit * COST);
        FailureLimits {
            by_source: table(b"failures by source", PER_SOURCE),
            by_pair: table(b"failures by source and username", PER_PAIR),
            by_username: table(b"failures by username", PER_USERNAME),
            successes: RecentSuccesses::new(key(b"recent successes").as_ref()),
        }
    }

    /// False once `source` has failed too often lately, or too often as
    /// `username`, or `username` has, unless `source` authenticated as it
    /// lately.
    pub(super) fn allows(&mut self, source: &[u8], username: &str, now: Instant) -> bool {
        let pair = pair_key(source, username);
        self.by_source.has(source, COST, now)
            && self.by_pair.has(&pair, COST, now)
            && (self.successes.contains(&pair, now) || self.by_username.has(username.as_bytes(), COST, now))
    }

    pub(super) fn record_failure(&mut self, source: &[u8], username: &str, now: Instant) {
        self.by_source.try_take(source, COST, now);
        self.by_pair.try_take(&pair_key(source, username), COST, now);
        self.by_username.try_take(username.as_bytes(), COST, now);
    }

    pub(super) fn record_success(&mut self, source: &[u8], username: &str, now: Instant) {
        self.successes.insert(&pair_key(source, username), now);
    }
}

/// One key for (source, username): the source has a fixed length, so the
/// two cannot run into each other.
fn pair_key(source: &[u8], username: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + username.len());
    key.extend_from_slice(source);
    key.extend_from_slice(username.as_bytes());
    key
}

/// Which (source, username) pairs authenticated lately, in fixed memory:
/// a keyed hash picks a slot and a 64-bit tag says whose it is, so a pair
/// is only found if it was inserted (or, once in 2^64, collides), and an
/// insert can only evict another pair's entry.
struct RecentSuccesses {
    key: hmac::Key,
    slots: Box<[Option<(u64, Instant)>]>,
}

impl RecentSuccesses {
    fn new(seed: &[u8]) -> RecentSuccesses {
        RecentSuccesses {
            key: hmac::Key::new(hmac::HMAC_SHA256, seed),
            slots: vec![None; SLOTS].into_boxed_slice(),
        }
    }

    /// The slot and tag of `pair`.
    fn locate(&self, pair: &[u8]) -> (usize, u64) {
        let digest = hmac::sign(&self.key, pair);
        let bytes = digest.as_ref();
        let word = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        ((word(0) % self.slots.len() as u64) as usize, word(8))
    }

    fn insert(&mut self, pair: &[u8], now: Instant) {
        let (slot, tag) = self.locate(pair);
        self.slots[slot] = Some((tag, now));
    }

    fn contains(&self, pair: &[u8], now: Instant) -> bool {
        let (slot, tag) = self.locate(pair);
        self.slots[slot].is_some_and(|(held, at)| held == tag && now.saturating_duration_since(at) < TRUSTED_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn start() -> (FailureLimits, Instant) {
        (FailureLimits::new(&[7; 32]), Instant::now())
    }

    fn source(i: u8) -> [u8; 16] {
        [10, 0, 0, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// Guesses `username` from `from` until refused; how many were looked at.
    fn guess_until_refused(limits: &mut FailureLimits, from: &[u8], username: &str, now: Instant) -> u64 {
        let mut looked_at = 0;
        while limits.allows(from, username, now) && looked_at < 1000 {
            limits.record_failure(from, username, now);
            looked_at += 1;
        }
        looked_at
    }

    #[test]
    fn one_source_failing_for_ever_does_not_lock_out_the_username() {
        let (mut limits, t0) = start();
        assert_eq!(guess_until_refused(&mut limits, &source(1), "shared", t0), PER_PAIR);
        // It keeps retrying all minute: refused, not looked at.
        for s in 0..60 {
            assert!(!limits.allows(&source(1), "shared", t0 + Duration::from_millis(s * 100)));
        }
        // Every other address, new or not, is looked at.
        assert!((2..100).all(|i| limits.allows(&source(i), "shared", t0)));
    }

    #[test]
    fn guesses_spread_over_many_sources_get_the_username_budget_in_all() {
        let (mut limits, t0) = start();
        let looked_at: u64 = (1..=200)
            .map(|i| guess_until_refused(&mut limits, &source(i), "alice", t0))
            .sum();
        assert_eq!(looked_at, PER_USERNAME);
        // The next minute brings one minute's budget, not more.
        let t1 = t0 + Duration::from_secs(60);
        let looked_at: u64 = (1..=200)
            .map(|i| guess_until_refused(&mut limits, &source(i), "alice", t1))
            .sum();
        assert_eq!(looked_at, PER_USERNAME);
    }

    #[test]
    fn a_source_that_authenticated_lately_is_held_only_to_its_own_budget() {
        let (mut limits, t0) = start();
        limits.record_success(&source(1), "alice", t0);
        (10..=200).for_each(|i| {
            guess_until_refused(&mut limits, &source(i), "alice", t0);
        });
        assert!(!limits.allows(&source(9), "alice", t0), "a new address waits");
        assert!(limits.allows(&source(1), "alice", t0), "alice's own address goes on");
        // The exception is for that username...
        (10..=200).for_each(|i| {
            guess_until_refused(&mut limits, &source(i), "bob", t0);
        });
        assert!(!limits.allows(&source(1), "bob", t0));
        // ...and lapses.
        let later = t0 + TRUSTED_FOR;
        (10..=200).for_each(|i| {
            guess_until_refused(&mut limits, &source(i), "alice", later);
        });
        assert!(!limits.allows(&source(1), "alice", later));
    }

    #[test]
    fn one_source_is_stopped_after_its_budget_over_many_usernames() {
        let (mut limits, t0) = start();
        let looked_at: u64 = (0..100)
            .map(|i| guess_until_refused(&mut limits, &source(1), &format!("user{i}"), t0))
            .sum();
        assert_eq!(looked_at, PER_SOURCE);
        assert!(limits.allows(&source(2), "user0", t0));
    }
}
