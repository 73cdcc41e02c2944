//! `[fleet]`: signaling rooms that span several instances, through Redis
//! (`docs/signaling.md`, "Rooms across a fleet"). Without `redis_url` the
//! section does nothing and rooms live in this process's memory.
//!
//! Every key is read at start: a reload does not change them (the log
//! says so when they differ).

use std::time::Duration;

use serde::Deserialize;

use super::Secret;

/// `[fleet]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSection {
    /// Redis server that holds room membership and carries signals
    /// between instances, as `redis://[user:password@]host[:port][/db]`.
    /// Every instance of a fleet names the same server and `key_prefix`.
    /// It also shares the admin API's revocations (`crate::fleet`).
    /// It may hold a password, so it is never logged. Unset, rooms and
    /// revocations stay in this process. Default: unset.
    pub redis_url: Option<Secret>,
    /// This instance's name in the fleet: which instance holds a peer, and
    /// the Redis channel (`<key_prefix>:inst:<instance_id>`) signals for
    /// its peers are published to. 1 to 64 of `[A-Za-z0-9_.-]`, unique in
    /// the fleet. Unset, a random one is drawn at every start (a restarted
    /// instance is a new one; its old peers expire). Default: unset.
    pub instance_id: Option<String>,
    /// How long a peer's membership lasts in Redis unless its instance
    /// refreshes it (every third of this). The peers of an instance that
    /// dies are seen leaving by the others within this (a record whose
    /// instance missed two refreshes counts as gone). From 3s to 5m.
    /// Default: `"10s"`.
    #[serde(with = "humantime_serde")]
    pub membership_ttl: Duration,
    /// Start of every Redis key and channel name of this fleet, so that
    /// several fleets can share one Redis. 1 to 32 of `[A-Za-z0-9_.-]`.
    /// Default: `"turnpike"`.
    pub key_prefix: String,
}

impl Default for FleetSection {
    fn default() -> Self {
        FleetSection {
            redis_url: None,
            instance_id: None,
            membership_ttl: Duration::from_secs(10),
            key_prefix: "turnpike".to_owned(),
        }
    }
}

impl FleetSection {
    /// True if `other` says the same (a reload compares them: the section
    /// takes effect only at start).
    pub fn same_as(&self, other: &FleetSection) -> bool {
        self.redis_url.as_ref().map(Secret::expose) == other.redis_url.as_ref().map(Secret::expose)
            && self.instance_id == other.instance_id
            && self.membership_ttl == other.membership_ttl
            && self.key_prefix == other.key_prefix
    }
}

/// True for 1 to `max` characters of `[A-Za-z0-9_.-]`: safe inside a
/// Redis key or channel name and in a log line.
pub fn is_fleet_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
