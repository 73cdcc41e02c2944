//! Revoked usernames: the set the TURN core consults on every
//! authenticated request (never per relayed packet), shared by every shard
//! of the process, filled by the operator's admin API and, with a fleet,
//! by what the other instances revoke (`crate::fleet`).
//!
//! An entry is `(username, until)`: the username is refused (401, as a bad
//! credential, RFC 8489 §9.2.4) while `now < until`, in unix seconds. For a
//! short-lived "REST" username (`<expiry>[:<name>]`) `until` is its own
//! expiry, after which the credential check refuses it anyway, so an entry
//! is never kept longer than it matters; for any other username the caller
//! picks a bound (see [`until_for`]).
//!
//! Two parts with two budgets, so that what Redis says can never crowd out
//! the operator: the operator's own revocations ([`Revocations::revoke`],
//! at most `capacity`, default [`MAX_REVOCATIONS`]) and those heard from
//! the fleet ([`Revocations::revoke_shared`], at most `fleet_capacity`,
//! default [`MAX_FLEET_REVOCATIONS`]). A username may be in both; it is
//! refused until the later of the two. A full part refuses new usernames
//! with [`RevokeError::Full`] (renewing one it holds needs no room); the
//! other part is untouched. What the fleet says is first clamped by
//! [`clamp_shared`] to `auth.max_credential_lifetime` from now (and a
//! short-lived username's own expiry), so a junk entry cannot hold a slot
//! for years.
//!
//! Expired entries are forgotten by a purge that runs on a write (a
//! revocation), at most once per [`PURGE_INTERVAL_SECS`]: a full part is
//! walked at most once a second, however many writes are refused. Nothing
//! ticks, and lookups and [`Revocations::list`] only skip expired entries.
//!
//! Cost on the hot path ([`Revocations::is_revoked`]): one relaxed atomic
//! load while the set is empty, else a read lock and one hash lookup; the
//! write lock is taken only to change the set, never by a lookup, and a
//! revocation from the fleet that changes nothing
//! ([`Revocations::holds`]) takes only the read lock. The set sits behind
//! this small API so that the instances of a fleet can share it without
//! the core noticing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use super::auth;

/// Default bound of the operator's own revocations: 100 000 usernames, a
/// few MiB.
pub const MAX_REVOCATIONS: usize = 100_000;

/// Default bound of the revocations heard from the fleet: twice what the
/// fleet's Redis set holds (10 000, `fleet::revocations::MAX_SHARED`), so
/// that a whole set loaded on (re)connection fits beside as many heard
/// since. Kept apart from [`MAX_REVOCATIONS`]: however many Redis sends,
/// the operator's own still fit.
pub const MAX_FLEET_REVOCATIONS: usize = 20_000;

/// Expired entries are forgotten at most once per this many seconds.
pub const PURGE_INTERVAL_SECS: u64 = 1;

/// The shortest an entry lives, so that revoking a username whose own
/// expiry has just passed still holds it off for a moment (its allocations
/// may keep refreshing past that expiry).
pub const MIN_REVOCATION: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    #[error("the revocation list is full ({0} usernames)")]
    Full(usize),
}

/// What a revocation from the fleet changed ([`Revocations::revoke_shared`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedChange {
    /// The username was not refused before: its allocations are to be
    /// ended.
    Added,
    /// It was refused already, now for longer: its allocations were ended
    /// then.
    Extended,
    /// It was refused already at least as long: nothing changed.
    Held,
}

/// One revoked username, as [`Revocations::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub username: String,
    /// Unix seconds until which it is refused.
    pub until_unix: u64,
}

/// The bounds of one username, unix seconds; 0 when that part has none.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// From the operator, here.
    local: u64,
    /// From the fleet.
    fleet: u64,
}

impl Entry {
    fn until(self) -> u64 {
        self.local.max(self.fleet)
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<Box<str>, Entry>,
    /// Entries with a `local` bound (expired ones not yet purged included).
    local: usize,
    /// Entries with a `fleet` bound (likewise).
    fleet: usize,
    /// The earliest unix second at which the next purge may run.
    next_purge: u64,
    /// Purges run (for the tests of their rate).
    #[cfg(test)]
    purges: usize,
}

impl Table {
    /// Forgets the bounds past `now`, if a purge is due.
    fn purge_if_due(&mut self, now: u64) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now.saturating_add(PURGE_INTERVAL_SECS);
        #[cfg(test)]
        {
            self.purges += 1;
        }
        let (mut local, mut fleet) = (0, 0);
        self.entries.retain(|_, entry| {
            if entry.local <= now {
                entry.local = 0;
            }
            if entry.fleet <= now {
                entry.fleet = 0;
            }
            local += usize::from(entry.local != 0);
            fleet += usize::from(entry.fleet != 0);
            entry.until() != 0
        });
        (self.local, self.fleet) = (local, fleet);
    }
}

pub struct Revocations {
    table: RwLock<Table>,
    /// `table.entries.len()`, readable without the lock: the hot path's
    /// check of an empty set.
    len: AtomicUsize,
    capacity: usize,
    fleet_capacity: usize,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::new(MAX_REVOCATIONS, MAX_FLEET_REVOCATIONS)
    }
}

impl Revocations {
    /// A set holding at most `capacity` of the operator's revocations and
    /// `fleet_capacity` heard from the fleet.
    pub fn new(capacity: usize, fleet_capacity: usize) -> Revocations {
        Revocations {
            table: RwLock::new(Table::default()),
            len: AtomicUsize::new(0),
            capacity,
            fleet_capacity,
        }
    }

    /// The operator's revocation: refuses `username` until `until_unix` (a
    /// later one already set is kept). Refused only when the operator's own
    /// part is full, whatever the fleet's holds.
    pub fn revoke(&self, username: &str, until_unix: u64, now_unix: u64) -> Result<(), RevokeError> {
        // Plain data written whole: a poisoned lock is still consistent.
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.purge_if_due(now_unix);
        let held = table.entries.get(username).is_some_and(|e| e.local != 0);
        if !held && table.local >= self.capacity {
            return Err(RevokeError::Full(self.capacity));
        }
        let entry = table.entries.entry(username.into()).or_default();
        entry.local = entry.local.max(until_unix);
        if !held {
            table.local += 1;
        }
        self.len.store(table.entries.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Whether `username` is refused until `until_unix` or later already
    /// (by either part): a revocation from the fleet that would change
    /// nothing. Takes the read lock only.
    pub fn holds(&self, username: &str, until_unix: u64) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.entries.get(username).is_some_and(|e| e.until() >= until_unix)
    }

    /// A revocation heard from the fleet, its bound already clamped
    /// ([`clamp_shared`]): held in the fleet's part. A username already
    /// held at least as long is [`SharedChange::Held`] without the write
    /// lock; a new one is refused when the fleet's part is full.
    pub fn revoke_shared(&self, username: &str, until_unix: u64, now_unix: u64) -> Result<SharedChange, RevokeError> {
        if self.holds(username, until_unix) {
            return Ok(SharedChange::Held);
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.purge_if_due(now_unix);
        let before = table.entries.get(username).copied().unwrap_or_default();
        if before.until() >= until_unix {
            // Held by a write between the two locks.
            return Ok(SharedChange::Held);
        }
        if before.fleet == 0 && table.fleet >= self.fleet_capacity {
            return Err(RevokeError::Full(self.fleet_capacity));
        }
        table.entries.entry(username.into()).or_default().fleet = until_unix;
        if before.fleet == 0 {
            table.fleet += 1;
        }
        self.len.store(table.entries.len(), Ordering::Relaxed);
        Ok(match before.until() > now_unix {
            true => SharedChange::Extended,
            false => SharedChange::Added,
        })
    }

    /// Whether `username` is refused at `now_unix`.
    pub fn is_revoked(&self, username: &str, now_unix: u64) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.entries.get(username).is_some_and(|e| e.until() > now_unix)
    }

    /// The usernames refused at `now_unix`, sorted, each with the later
    /// bound of its two parts (read lock only; expired entries are skipped,
    /// and forgotten by the next purge).
    pub fn list(&self, now_unix: u64) -> Vec<Revocation> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Revocation> = table
            .entries
            .iter()
            .filter(|(_, entry)| entry.until() > now_unix)
            .map(|(username, entry)| Revocation {
                username: username.to_string(),
                until_unix: entry.until(),
            })
            .collect();
        drop(table);
        list.sort_by(|a, b| a.username.cmp(&b.username));
        list
    }

    /// Usernames held, expired ones not yet forgotten included (for metrics:
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

/// The bound a revocation heard from the fleet is held to here, or `None`
/// if it is past: `until_unix`, at most `max_lifetime`
/// (`auth.max_credential_lifetime`) from now, and for a short-lived
/// username at most its own expiry, though never less than
/// [`MIN_REVOCATION`] from now for one whose expiry has just passed (as
/// [`until_for`]: its allocations may still refresh, and revoking is what
/// ends them).
pub fn clamp_shared(username: &str, until_unix: u64, now_unix: u64, max_lifetime: Duration) -> Option<u64> {
    let mut bound = now_unix.saturating_add(max_lifetime.as_secs());
    if let Some(expiry) = auth::ephemeral_expiry(username) {
        bound = bound.min(expiry.max(now_unix.saturating_add(MIN_REVOCATION.as_secs())));
    }
    Some(until_unix.min(bound)).filter(|until| *until > now_unix)
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
        assert!(set.list(200).is_empty(), "an expired entry is not listed");
        // … and forgotten by the next write's purge.
        set.revoke("bob", 300, 200).unwrap();
        assert_eq!(set.len(), 1);
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
        let set = Revocations::new(2, 2);
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

    #[test]
    fn the_fleet_part_cannot_crowd_out_the_operator_nor_the_reverse() {
        let set = Revocations::new(2, 2);
        assert_eq!(set.revoke_shared("f1", 100, 0), Ok(SharedChange::Added));
        assert_eq!(set.revoke_shared("f2", 100, 0), Ok(SharedChange::Added));
        assert_eq!(set.revoke_shared("f3", 100, 0), Err(RevokeError::Full(2)));
        assert!(!set.is_revoked("f3", 0));
        // The operator's own fit beside a full fleet part, even for a
        // username the fleet holds (it takes a slot of the operator's).
        set.revoke("mine", 100, 0).unwrap();
        set.revoke("f1", 50, 0).unwrap();
        assert_eq!(set.revoke("more", 100, 0), Err(RevokeError::Full(2)));
        // A full operator's part does not refuse the fleet either, for a
        // username it holds or not.
        let set = Revocations::new(1, 2);
        set.revoke("mine", 100, 0).unwrap();
        assert_eq!(set.revoke("other", 100, 0), Err(RevokeError::Full(1)));
        assert_eq!(set.revoke_shared("mine", 200, 0), Ok(SharedChange::Extended));
        assert_eq!(set.revoke_shared("other", 100, 0), Ok(SharedChange::Added));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn a_username_held_as_long_is_held_without_the_write_lock() {
        let set = Revocations::default();
        set.revoke("alice", 300, 0).unwrap();
        assert!(set.holds("alice", 300) && !set.holds("alice", 301) && !set.holds("bob", 1));
        // Held as long or longer: nothing changes, and no write lock is
        // wanted (this thread holds a read guard: taking it would block).
        let guard = set.table.read().unwrap();
        assert_eq!(set.revoke_shared("alice", 300, 0), Ok(SharedChange::Held));
        assert_eq!(set.revoke_shared("alice", 250, 0), Ok(SharedChange::Held));
        drop(guard);
        // Longer: extended (its allocations were ended when first held).
        assert_eq!(set.revoke_shared("alice", 400, 0), Ok(SharedChange::Extended));
        assert_eq!(set.list(0)[0].until_unix, 400);
        // Held once but expired: added again.
        assert_eq!(set.revoke_shared("alice", 900, 500), Ok(SharedChange::Added));
    }

    #[test]
    fn the_two_parts_are_listed_as_one_with_the_later_bound() {
        let set = Revocations::default();
        set.revoke("alice", 100, 0).unwrap();
        set.revoke_shared("alice", 200, 0).unwrap();
        set.revoke_shared("bob", 50, 0).unwrap();
        let list = set.list(60);
        assert_eq!(list.len(), 1);
        assert_eq!(
            list[0],
            Revocation {
                username: "alice".into(),
                until_unix: 200
            }
        );
        // The fleet's bound gone, the operator's is what is left.
        let set = Revocations::default();
        set.revoke("alice", 300, 0).unwrap();
        set.revoke_shared("alice", 400, 0).unwrap();
        assert!(set.is_revoked("alice", 350) && !set.is_revoked("alice", 400));
    }

    #[test]
    fn expired_entries_are_purged_at_most_once_a_second() {
        let set = Revocations::new(2, 2);
        let purges = |set: &Revocations| set.table.read().unwrap().purges;
        set.revoke("a", 10, 0).unwrap();
        set.revoke("b", 100, 0).unwrap();
        assert_eq!(purges(&set), 1);
        // A full part refused many times in one second is walked once.
        for _ in 0..1000 {
            assert_eq!(set.revoke("c", 100, 5), Err(RevokeError::Full(2)));
        }
        assert_eq!(purges(&set), 2);
        // Lookups and lists never purge.
        assert!(!set.is_revoked("a", 10));
        assert_eq!(set.list(10).len(), 1);
        assert_eq!((purges(&set), set.len()), (2, 2));
        // The next second's write forgets `a` and `c` fits.
        set.revoke("c", 100, 10).unwrap();
        assert_eq!((purges(&set), set.len()), (3, 2));
        // A part empties by purge: its slots come back to it.
        set.revoke_shared("x", 20, 10).unwrap();
        set.revoke_shared("y", 20, 10).unwrap();
        assert_eq!(set.revoke_shared("z", 30, 10), Err(RevokeError::Full(2)));
        assert_eq!(set.revoke_shared("z", 30, 20), Ok(SharedChange::Added));
        assert_eq!(set.len(), 3, "b, c and z");
    }

    #[test]
    fn a_revocation_from_the_fleet_is_clamped_to_the_credential_lifetime() {
        const MAX: Duration = Duration::from_secs(7200);
        let now = 1_000_000;
        // A static username: at most the lifetime from now.
        assert_eq!(clamp_shared("alice", u64::MAX, now, MAX), Some(now + 7200));
        assert_eq!(clamp_shared("alice", now + 30, now, MAX), Some(now + 30));
        // A short-lived one: at most its own expiry, and the lifetime.
        let soon = format!("{}:bob", now + 1800);
        assert_eq!(clamp_shared(&soon, 99_999_999_999, now, MAX), Some(now + 1800));
        let far = format!("{}:bob", now + 1_000_000);
        assert_eq!(clamp_shared(&far, 99_999_999_999, now, MAX), Some(now + 7200));
        // Just expired: held off the minimum, as the admin API does, so
        // that its allocations (which may still refresh) are ended.
        let expired = format!("{}:bob", now - 5);
        assert_eq!(clamp_shared(&expired, u64::MAX, now, MAX), Some(now + 60));
        // Past its bound: nothing to hold.
        assert_eq!(clamp_shared("alice", now, now, MAX), None);
        assert_eq!(clamp_shared("alice", 0, now, MAX), None);
        assert_eq!(clamp_shared("alice", u64::MAX, u64::MAX, MAX), None);
    }
}
