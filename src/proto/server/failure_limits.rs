//! Failed authentications, limited per source address and per username,
//! in fixed memory ([`RateTable`]). Over either limit a request is refused
//! with 401 without a look at its credentials, so guessing a password (or
//! a shared secret's output) runs at a minute's budget at most, from one
//! address and against one username alike.
//!
//! The per-username limit lets someone who knows a username keep its owner
//! out while they keep failing: the price of bounding guesses against a
//! user spread over many addresses. Short-lived credentials (the usual
//! case) carry their expiry in the username, so a locked-out user is
//! unlocked by the next credential the application mints.

use std::time::Instant;

use ring::hmac;

use crate::proto::rate_table::RateTable;

/// Failures a minute, and at once, from one source address.
const PER_SOURCE: u64 = 60;
/// Failures a minute, and at once, for one username.
const PER_USERNAME: u64 = 30;
/// Tokens a failure costs: rates are in tokens a second, limits in
/// failures a minute.
const COST: u64 = 60;
/// Slots of each table (about 64 KiB a shard each).
const SLOTS: usize = 1024;

pub(super) struct FailureLimits {
    by_source: RateTable,
    by_username: RateTable,
}

impl FailureLimits {
    pub(super) fn new(seed: &[u8; 32]) -> FailureLimits {
        let key = |label: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, seed), label);
        FailureLimits {
            by_source: RateTable::new(
                key(b"failures by source").as_ref(),
                SLOTS,
                PER_SOURCE,
                PER_SOURCE * COST,
            ),
            by_username: RateTable::new(
                key(b"failures by username").as_ref(),
                SLOTS,
                PER_USERNAME,
                PER_USERNAME * COST,
            ),
        }
    }

    /// False once `source` or `username` has failed too often lately.
    pub(super) fn allows(&mut self, source: &[u8], username: &str, now: Instant) -> bool {
        self.by_source.has(source, COST, now) && self.by_username.has(username.as_bytes(), COST, now)
    }

    pub(super) fn record(&mut self, source: &[u8], username: &str, now: Instant) {
        self.by_source.try_take(source, COST, now);
        self.by_username.try_take(username.as_bytes(), COST, now);
    }
}
