//! Revoked usernames: the set the TURN core consults on every
//! authenticated request (never per relayed packet), shared by every shard
//! of the process, and filled by the operator's admin API.
//!
//! An entry is `(username, until)`: the username is refused (401, as a bad
//! credential, RFC 8489 §9.2.4) while `now < until`, in unix seconds. For a
//! short-lived "REST" username (`<expiry>[:<name>]`) `until` is its own
//! expiry, after which the credential check refuses it anyway, so an entry
//! is never kept longer than it matters; for any other username the caller
//! picks a bound (see [`until_for`]).
//!
//! Bounds: at most `capacity` entries (default [`MAX_REVOCATIONS`]); a full
//! set first forgets its expired entries and then refuses new ones with
//! [`RevokeError::Full`], so a careless script cannot grow it without end.
//! Expired entries are otherwise dropped lazily, on [`Revocations::list`]
//! and when the set is full: nothing ticks.
//!
//! Cost on the hot path: one relaxed atomic load while the set is empty,
//! else a read lock and one hash lookup. The set sits behind this small API
//! (`revoke`, `is_revoked`, `list`) so that the instances of a fleet can
//! share it (`crate::fleet`, which calls `revoke` for what the
//! others revoked) without the core noticing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use super::auth;

/// Default bound of the set: 100 000 usernames, a few MiB.
pub const MAX_REVOCATIONS: usize = 100_000;

/// The shortest an entry lives, so that revoking a username whose own
/// expiry has just passed still holds it off for a moment (its allocations
/// may keep refreshing past that expiry).
pub const MIN_REVOCATION: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    #[error("the revocation list is full ({0} usernames)")]
    Full(usize),
}

/// One revoked username, as [`Revocations::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub username: String,
    /// Unix seconds until which it is refused.
    pub until_unix: u64,
}

pub struct Revocations {
    /// Username → unix seconds until which it is refused.
    entries: RwLock<HashMap<Box<str>, u64>>,
    /// `entries.len()`, readable without the lock: the hot path's check of
    /// an empty set.
    len: AtomicUsize,
    capacity: usize,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::new(MAX_REVOCATIONS)
    }
}

impl Revocations {
    pub fn new(capacity: usize) -> Revocations {
        Revocations {
            entries: RwLock::new(HashMap::new()),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Refuses `username` until `until_unix` (a later one already set is
    /// kept).
    pub fn revoke(&self, username: &str, until_unix: u64, now_unix: u64) -> Result<(), RevokeError> {
        // Plain data written whole: a poisoned lock is still consistent.
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(username) && entries.len() >= self.capacity {
            entries.retain(|_, until| *until > now_unix);
            if entries.len() >= self.capacity {
                self.len.store(entries.len(), Ordering::Relaxed);
                return Err(RevokeError::Full(self.capacity));
            }
        }
        let until = entries.entry(username.into()).or_insert(until_unix);
        *until = (*until).max(until_unix);
        self.len.store(entries.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Whether `username` is refused at `now_unix`.
    pub fn is_revoked(&self, username: &str, now_unix: u64) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(username).is_some_and(|until| *until > now_unix)
    }

    /// The usernames refused at `now_unix`, sorted; expired entries are
    /// forgotten on the way.
    pub fn list(&self, now_unix: u64) -> Vec<Revocation> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, until| *until > now_unix);
        self.len.store(entries.len(), Ordering::Relaxed);
        let mut list: Vec<Revocation> = entries
            .iter()
            .map(|(username, until)| Revocation {
                username: username.to_string(),
                until_unix: *until,
            })
            .collect();
        list.sort_by(|a, b| a.username.cmp(&b.username));
        list
    }

    /// Entries held, expired ones not yet forgotten included (for metrics:
    /// no lock).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Until when a revocation of `username` made at `now_unix` holds: `now +
/// ttl` if the operator gave one; else, for a short-lived username, its own
/// expiry; else `now + default_ttl`. Never less than [`MIN_REVOCATION`].
pub fn until_for(username: &str, now_unix: u64, ttl: Option<Duration>, default_ttl: Duration) -> u64 {
    let until = match (ttl, auth::ephemeral_expiry(username)) {
        (Some(ttl), _) => now_unix.saturating_add(ttl.as_secs()),
        (None, Some(expiry)) => expiry,
        (None, None) => now_unix.saturating_add(default_ttl.as_secs()),
    };
    until.max(now_unix.saturating_add(MIN_REVOCATION.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_revoked_username_is_refused_until_its_bound_and_no_longer() {
        let set = Revocations::default();
        assert!(!set.is_revoked("alice", 100));
        set.revoke("alice", 200, 100).unwrap();
        assert!(set.is_revoked("alice", 199));
        assert!(!set.is_revoked("alice", 200));
        assert!(!set.is_revoked("bob", 150));
        assert_eq!(set.list(150).len(), 1);
        assert!(set.list(200).is_empty(), "an expired entry is forgotten");
        assert!(set.is_empty());
    }

    #[test]
    fn a_later_bound_wins_over_an_earlier_one() {
        let set = Revocations::default();
        set.revoke("alice", 300, 0).unwrap();
        set.revoke("alice", 200, 0).unwrap();
        assert_eq!(set.list(0)[0].until_unix, 300);
    }

    #[test]
    fn a_full_set_forgets_expired_entries_then_refuses() {
        let set = Revocations::new(2);
        set.revoke("a", 10, 0).unwrap();
        set.revoke("b", 100, 0).unwrap();
        assert_eq!(set.revoke("c", 100, 5), Err(RevokeError::Full(2)));
        set.revoke("c", 100, 10).unwrap();
        assert!(set.is_revoked("c", 10) && set.is_revoked("b", 10));
        // Renewing one already held needs no room.
        set.revoke("b", 200, 10).unwrap();
    }

    #[test]
    fn a_short_lived_username_is_revoked_until_its_own_expiry() {
        assert_eq!(until_for("5000:alice", 1000, None, DAY), 5000);
        assert_eq!(until_for("5000", 1000, None, DAY), 5000);
        assert_eq!(until_for("alice", 1000, None, DAY), 1000 + 86_400);
        assert_eq!(until_for("alice", 1000, Some(Duration::from_secs(120)), DAY), 1120);
        // Already expired: held off for the minimum still.
        assert_eq!(until_for("900:alice", 1000, None, DAY), 1060);
    }
}
