//! `[fleet]`: signaling rooms that span several instances, through Redis
//! (`docs/signaling.md`, "Rooms across a fleet"). Without `redis_url` the
//! section does nothing and rooms live in this process's memory.
//!
//! Every key is read at start: a reload does not change them (the log
//! says so when they differ).
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: a
//! `redis://` URL (never quoted in an error: it may hold a password),
//! names that fit in a Redis key, and a membership lifetime whose third
//! (the refresh) is at least a second.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret};

/// Longest `fleet.instance_id` and `fleet.key_prefix`.
const MAX_FLEET_NAME: usize = 64;
const MAX_FLEET_PREFIX: usize = 32;

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
    /// Instances may differ: each record carries its writer's lifetime
    /// and is judged by it. Default: `"10s"`.
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
    /// Bounds of `fleet.membership_ttl`: its third, the refresh, is at
    /// least a second; at most, a dead instance's peers linger five
    /// minutes. A membership record carries its writer's lifetime, and one
    /// outside these bounds is invalid (`fleet_wire`).
    pub const MIN_MEMBERSHIP_TTL: Duration = Duration::from_secs(3);
    pub const MAX_MEMBERSHIP_TTL: Duration = Duration::from_secs(300);

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

/// `[fleet]`: a `redis://` URL, names that fit in a Redis key, and a
/// membership lifetime whose third (the refresh) is at least a second.
pub(super) fn check(fleet: &FleetSection) -> Result<(), ConfigError> {
    if let Some(url) = &fleet.redis_url {
        // The reason never quotes the URL: it may hold a password.
        let rest = url.expose().strip_prefix("redis://").ok_or_else(|| {
            ConfigError::invalid(
                "fleet.redis_url",
                "must start with redis:// (TLS to Redis is not supported)",
            )
        })?;
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        if host.is_empty() || host.starts_with('/') || host.starts_with(':') {
            return Err(ConfigError::invalid("fleet.redis_url", "names no host"));
        }
    }
    if let Some(id) = &fleet.instance_id {
        if !is_fleet_name(id, MAX_FLEET_NAME) {
            return Err(ConfigError::invalid(
                "fleet.instance_id",
                format!("must be 1 to {MAX_FLEET_NAME} characters of A-Z, a-z, 0-9, '_', '.' and '-'"),
            ));
        }
    }
    if !is_fleet_name(&fleet.key_prefix, MAX_FLEET_PREFIX) {
        return Err(ConfigError::invalid(
            "fleet.key_prefix",
            format!("must be 1 to {MAX_FLEET_PREFIX} characters of A-Z, a-z, 0-9, '_', '.' and '-'"),
        ));
    }
    if !(FleetSection::MIN_MEMBERSHIP_TTL..=FleetSection::MAX_MEMBERSHIP_TTL).contains(&fleet.membership_ttl) {
        return Err(ConfigError::invalid("fleet.membership_ttl", "must be from 3s to 5m"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn fleet_keys_are_checked_without_quoting_the_redis_url() {
        let ok = parse(
            "[fleet]\nredis_url = \"redis://:pw@127.0.0.1:6379/0\"\ninstance_id = \"a-1.x\"\nmembership_ttl = \"3s\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        let err = parse("[fleet]\nredis_url = \"http://:hunter2@h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fleet.redis_url") && !err.contains("hunter2"), "{err}");
        assert_eq!(invalid_key("[fleet]\nredis_url = \"redis://\"\n"), "fleet.redis_url");
        assert_eq!(invalid_key("[fleet]\ninstance_id = \"a b\"\n"), "fleet.instance_id");
        assert_eq!(invalid_key("[fleet]\nkey_prefix = \"\"\n"), "fleet.key_prefix");
        assert_eq!(
            invalid_key("[fleet]\nmembership_ttl = \"2s\"\n"),
            "fleet.membership_ttl"
        );
        assert_eq!(
            invalid_key("[fleet]\nmembership_ttl = \"6m\"\n"),
            "fleet.membership_ttl"
        );
    }
}
