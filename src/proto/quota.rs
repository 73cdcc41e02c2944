//! The allocation quota every shard shares: allocations in total and per
//! user, each user's shared byte-rate bucket, and whether new allocations
//! are taken at all (graceful shutdown). Touched only when an allocation
//! is created or deleted, never per packet (the user bucket aside, see
//! [`SharedBucket`]).
//!
//! An EVEN-PORT reservation (RFC 8656 §7.2) holds a place in its
//! creator's count like an allocation, from the Allocate that makes it to
//! the claim or the expiry, whichever comes first; the claimant's own
//! allocation is counted as any other.
//!
//! It also counts the RFC 6062 peer connections of every shard against
//! `limits.max_peer_connections`, a cap on the whole server: the TCP
//! allocations holding them live on any shard.
//!
//! Invariant: `total` equals the sum of `per_user[..].count`, which counts
//! allocations and `reservations` together, and a user with neither has no
//! entry. `peer_connections` equals the sum of every core's
//! `Server::connections` lengths.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::source::SourceKey;
use super::token_bucket::TokenBucket;

/// Allocation counts shared by every shard (only touched on allocation
/// create and delete, never per packet), and whether new allocations are
/// taken at all: [`close`](Self::close) starts a graceful shutdown, after
/// which every Allocate gets 508 while existing allocations live on.
#[derive(Debug)]
pub struct AllocationQuota {
    max_total: AtomicUsize,
    max_per_user: AtomicUsize,
    total: AtomicUsize,
    per_user: Mutex<HashMap<String, UserShare>>,
    closed: AtomicBool,
    /// The server relays more than it should take on (see
    /// [`set_saturated`](Self::set_saturated)).
    saturated: AtomicBool,
    /// Bytes a second all of one user's allocations may relay; 0: no limit.
    user_rate: AtomicU64,
    /// Creators of the reservations not yet claimed or expired, by token.
    reservations: Mutex<HashMap<u64, String>>,
    /// Allocations from one source (see [`SourceKey`]); 0: no limit. An
    /// entry only while the source has one, so the map is bounded by the
    /// allocations.
    max_per_source: AtomicUsize,
    per_source: Mutex<HashMap<SourceKey, usize>>,
    /// TCP peer connections (RFC 6062) held by every shard's core.
    peer_connections: AtomicUsize,
}

/// One user's allocations, and the byte-rate bucket they share.
#[derive(Debug)]
struct UserShare {
    count: usize,
    bucket: Option<SharedBucket>,
}

/// A byte-rate bucket shared by the allocations of one user, which may
/// live on several shards. Only touched per packet when a user rate is
/// configured, and then the lock is uncontended unless the user's
/// allocations are busy on two shards at once.
pub type SharedBucket = Arc<Mutex<TokenBucket>>;

/// The smallest burst of a byte rate: any media packet fits, and so does
/// one read of an RFC 6062 splice (which is why a splice reads at most
/// this much at a time: a full bucket can always pay for it).
pub const MIN_BURST: u64 = 16 * 1024;

/// The bucket of a byte rate: half a second of traffic may pass in a
/// burst, and at least [`MIN_BURST`].
pub fn rate_bucket(bytes_per_second: u64, now: Instant) -> TokenBucket {
    TokenBucket::new(bytes_per_second, (bytes_per_second / 2).max(MIN_BURST), now)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaExceeded {
    User,
    Total,
    /// The server is shutting down.
    Closed,
}

impl AllocationQuota {
    pub fn new(max_total: usize, max_per_user: usize) -> AllocationQuota {
        AllocationQuota {
            max_total: AtomicUsize::new(max_total),
            max_per_user: AtomicUsize::new(max_per_user),
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            saturated: AtomicBool::new(false),
            user_rate: AtomicU64::new(0),
            reservations: Mutex::new(HashMap::new()),
            max_per_source: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
            peer_connections: AtomicUsize::new(0),
        }
    }

    /// Counts a new TCP peer connection, unless every shard together holds
    /// `max` already (the core's `max_peer_connections`, the same on every
    /// shard). Atomic, so shards racing for the last place cannot both
    /// take it.
    pub(crate) fn try_acquire_peer_connection(&self, max: usize) -> bool {
        self.peer_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Gives back the place of a peer connection that went.
    pub(crate) fn release_peer_connection(&self) {
        let _ = self
            .peer_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// TCP peer connections on every shard now.
    pub fn peer_connections(&self) -> usize {
        self.peer_connections.load(Ordering::Relaxed)
    }

    /// Allocations one source address may hold (0: no limit), so that a
    /// client with a stream of fresh usernames (one per signaling session,
    /// say) cannot take every allocation from one address.
    pub fn set_source_limit(&self, max_per_source: usize) {
        self.max_per_source.store(max_per_source, Ordering::Relaxed);
    }

    /// Counts an allocation from `source`, unless it holds its share.
    pub(crate) fn try_acquire_source(&self, source: SourceKey) -> bool {
        let max = self.max_per_source.load(Ordering::Relaxed);
        let mut per_source = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_source.entry(source).or_insert(0);
        if max > 0 && *n >= max {
            if *n == 0 {
                per_source.remove(&source);
            }
            return false;
        }
        *n += 1;
        true
    }

    pub(crate) fn release_source(&self, source: SourceKey) {
        let mut per_source = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                per_source.remove(&source);
            }
        }
    }

    /// Allocations on every shard now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// New limits (config reload). Allocations over them stay; only new
    /// ones are refused.
    pub fn set_limits(&self, max_total: usize, max_per_user: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_user.store(max_per_user, Ordering::Relaxed);
    }

    /// Bytes a second all of one user's allocations may relay together
    /// (0: no limit); applies to users who have no allocation yet.
    pub fn set_user_rate(&self, bytes_per_second: u64) {
        self.user_rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Refuses every new allocation from now on (graceful shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Set by the driver when the whole server relays more than its
    /// configured bandwidth (`alternate.bytes_per_second`), cleared when it
    /// falls back below: new allocations are then sent to a sibling (300)
    /// while the live ones keep their share.
    pub fn set_saturated(&self, saturated: bool) {
        self.saturated.store(saturated, Ordering::Relaxed);
    }

    pub fn is_saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Counts a new allocation of `user`; returns the user's byte-rate
    /// bucket, if a user rate is set.
    pub(crate) fn try_acquire(&self, user: &str, now: Instant) -> Result<Option<SharedBucket>, QuotaExceeded> {
        if self.is_closed() {
            return Err(QuotaExceeded::Closed);
        }
        // A poisoned lock only means another shard panicked mid-update of
        // plain counters; the counts are still meaningful.
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_user.get(user).map_or(0, |share| share.count);
        if count >= self.max_per_user.load(Ordering::Relaxed) {
            return Err(QuotaExceeded::User);
        }
        if self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < self.max_total.load(Ordering::Relaxed)).then_some(t + 1)
            })
            .is_err()
        {
            return Err(QuotaExceeded::Total);
        }
        let rate = self.user_rate.load(Ordering::Relaxed);
        let share = per_user.entry(user.to_owned()).or_insert_with(|| UserShare {
            count: 0,
            bucket: (rate > 0).then(|| Arc::new(Mutex::new(rate_bucket(rate, now)))),
        });
        share.count += 1;
        Ok(share.bucket.clone())
    }

    /// Counts a new allocation of `user` that claims reservation `token`:
    /// the reservation's place moves from its creator to `user`, so a
    /// full quota does not refuse the claim of a port it already counts.
    /// If `user` cannot have the place, the creator keeps it.
    pub(crate) fn try_acquire_claiming(
        &self,
        user: &str,
        token: u64,
        now: Instant,
    ) -> Result<Option<SharedBucket>, QuotaExceeded> {
        let creator = self
            .reservations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some(creator) = &creator {
            self.release(creator);
        }
        let acquired = self.try_acquire(user, now);
        if let (Err(_), Some(creator)) = (&acquired, creator) {
            self.recharge(&creator);
            self.reservations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token, creator);
        }
        acquired
    }

    /// Puts a place released a moment ago back, limits or not.
    fn recharge(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let share = per_user
            .entry(user.to_owned())
            .or_insert_with(|| UserShare { count: 0, bucket: None });
        share.count += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
    }

    /// Charges reservation `token` to `user`, as an allocation would be.
    pub(crate) fn try_reserve(&self, token: u64, user: &str, now: Instant) -> Result<(), QuotaExceeded> {
        self.try_acquire(user, now)?;
        self.reservations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, user.to_owned());
        Ok(())
    }

    /// Ends the charge of reservation `token` (claimed or expired); the
    /// second call for a token does nothing.
    pub(crate) fn end_reservation(&self, token: u64) {
        let creator = self
            .reservations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some(creator) = creator {
            self.release(&creator);
        }
    }

    /// Reservations charged now, on every shard.
    pub fn reservations(&self) -> usize {
        self.reservations.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn release(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = per_user.get_mut(user) {
            share.count -= 1;
            if share.count == 0 {
                per_user.remove(user);
            }
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_connections_are_capped_over_every_shard_and_come_back() {
        let quota = AllocationQuota::new(10, 10);
        // Two shards' cores take places from the one count.
        assert!(quota.try_acquire_peer_connection(3));
        assert!(quota.try_acquire_peer_connection(3));
        assert!(quota.try_acquire_peer_connection(3));
        assert!(!quota.try_acquire_peer_connection(3));
        assert_eq!(quota.peer_connections(), 3);
        quota.release_peer_connection();
        assert!(quota.try_acquire_peer_connection(3));
        // A lowered cap (reload) refuses new ones and keeps the count.
        assert!(!quota.try_acquire_peer_connection(2));
        for _ in 0..4 {
            quota.release_peer_connection();
        }
        assert_eq!(quota.peer_connections(), 0, "never below zero");
    }
}
