//! What the rest of the process reads of the fleet: whether Redis is
//! reachable (one answer, for `/readyz` and `turnpike_fleet_redis_up`,
//! since both channels share one link) and one set of counters, written
//! by the link and its channels and read by `/metrics`.
//!
//! Plain relaxed atomics: each counter is read on its own, and a scrape
//! that sees one a little ahead of another says nothing wrong. The
//! instances heard lately ([`InstanceTable`]) are behind a lock of their
//! own, held for a copy.
//!
//! [`InstanceTable`]: super::instance_table::InstanceTable

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::instance_table::{InstanceTable, InstanceView};
use super::report_wire::Report;

/// What became of a revocation shared through the fleet's Redis (metric
/// label values, in [`RevocationOutcome`] order).
pub const REVOCATION_OUTCOMES: [&str; 5] = ["shared", "applied", "invalid", "dropped", "limited"];

/// One outcome of [`REVOCATION_OUTCOMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationOutcome {
    /// Made here and written to Redis.
    Shared = 0,
    /// Heard from Redis (message or loaded entry) and applied here.
    Applied = 1,
    /// A message or entry from Redis that was refused.
    Invalid = 2,
    /// Made here and never shared (queue or outage buffer full).
    Dropped = 3,
    /// Heard from Redis, valid, and not held here: over the rate at which
    /// revocations from Redis are applied, or the fleet's part of the set
    /// is full.
    Limited = 4,
}

/// The fleet's state, shared by the link, its channels and the readers.
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// This instance's name (`fleet.instance_id`, or drawn at start).
    instance: String,
    /// Every instance's last report (`super::instances`).
    instances: Mutex<InstanceTable>,
    up: AtomicBool,
    /// Room messages published to other instances.
    sent: AtomicU64,
    /// Room messages heard from other instances and accepted.
    received: AtomicU64,
    /// Room messages and membership records from Redis that were refused.
    invalid: AtomicU64,
    /// Room signals and leaves that could not be sent (Redis down).
    outage_drops: AtomicU64,
    revocations: [AtomicU64; REVOCATION_OUTCOMES.len()],
}

/// A snapshot of the rooms' side of [`FleetStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomCounts {
    pub up: bool,
    pub sent: u64,
    pub received: u64,
    pub invalid: u64,
    pub outage_drops: u64,
}

/// A room counter of [`FleetStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoomCounter {
    Sent,
    Received,
    Invalid,
    OutageDrop,
}

impl FleetStatus {
    /// The status of instance `instance`, Redis not reached yet.
    pub fn new(instance: &str) -> FleetStatus {
        FleetStatus {
            instance: instance.to_owned(),
            ..FleetStatus::default()
        }
    }

    /// This instance's name in the fleet.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn table(&self) -> MutexGuard<'_, InstanceTable> {
        // Plain data written whole: a poisoned lock is still used.
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every instance heard lately, this one included, by name, at unix
    /// millisecond `now_ms`.
    pub fn instances(&self, now_ms: u64) -> Vec<InstanceView> {
        self.table().view(&self.instance, now_ms)
    }

    /// Instances heard within the last three reports, and their
    /// allocations together.
    pub fn live_instances(&self, now_ms: u64) -> (u64, u64) {
        self.table().live(now_ms)
    }

    pub(super) fn record_instance(&self, instance: &str, report: Report, at_ms: u64, boot: u64, now_ms: u64) {
        self.table().record(instance, report, at_ms, boot, now_ms);
    }

    /// Redis is reachable: the link is connected and subscribed.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(super) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    pub fn room_counts(&self) -> RoomCounts {
        RoomCounts {
            up: self.up(),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            outage_drops: self.outage_drops.load(Ordering::Relaxed),
        }
    }

    pub(super) fn count_room(&self, counter: RoomCounter) {
        let counter = match counter {
            RoomCounter::Sent => &self.sent,
            RoomCounter::Received => &self.received,
            RoomCounter::Invalid => &self.invalid,
            RoomCounter::OutageDrop => &self.outage_drops,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_revocation(&self, outcome: RevocationOutcome) {
        self.revocations[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Revocation outcomes so far, by [`REVOCATION_OUTCOMES`].
    pub fn revocations(&self) -> [u64; REVOCATION_OUTCOMES.len()] {
        std::array::from_fn(|i| self.revocations[i].load(Ordering::Relaxed))
    }
}
