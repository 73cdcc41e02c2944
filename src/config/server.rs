//! `[server]`: the server's identity on the wire (REALM, SOFTWARE, the
//! relay IP it advertises), its number of shards and its shutdown grace.
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`], the rules
//! serde cannot express. Contract of `check`: the first broken rule as a
//! [`ConfigError`] naming its key, the section unchanged. The warning
//! about a realm long enough to amplify a 401 is with the other start-up
//! warnings in `cross.rs`.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, ExternalIps};

/// Most event-loop shards `server.workers` may ask for.
pub const MAX_WORKERS: usize = 256;

/// REALM and SOFTWARE hold fewer than 128 characters (RFC 8489 §14.9,
/// §14.14), which also keeps them under 763 bytes.
const MAX_TEXT_CHARS: usize = 127;
/// The longest realm with which a 401 stays within twice the smallest
/// Allocate (28 bytes, no FINGERPRINT): 20 header + 8 ERROR-CODE + 12
/// NONCE + 4 + 12 REALM = 56.
pub(super) const REFLECTION_SAFE_REALM: usize = 12;

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Realm of the long-term credentials (RFC 8489 §9.2), sent in REALM and
    /// hashed into every user key, so changing it invalidates precomputed
    /// `auth.users` keys. Non-empty, fewer than 128 characters, no control
    /// characters. Default: `"turnpike"`.
    pub realm: String,
    /// Value of the SOFTWARE attribute in responses; `""` leaves the
    /// attribute out. Fewer than 128 characters, no control characters.
    /// Default: `"turnpike/"` followed by the version.
    pub software: String,
    /// Public addresses of a server behind a 1:1 NAT or a load balancer
    /// (a cloud VM whose public IP maps onto a private one), one per
    /// family: `"203.0.113.7"`, or a list such as `["203.0.113.7",
    /// "2001:db8::7"]`. Relays advertise the one of their family in
    /// XOR-RELAYED-ADDRESS instead of the address they are bound to, and
    /// each counts as one of this server's own addresses for relay-to-relay
    /// delivery. `"PUBLIC/LOCAL"` (coturn's form) also names the local
    /// address the public one maps onto, where this host's relays reach
    /// each other; it must be the relays' bind address of its family
    /// (`relay.ipv4`, `relay.ipv6`) unless that is the wildcard. An IPv6
    /// entry needs `relay.ipv6` on. Default: unset: `relay.ipv4` is
    /// advertised, or, when that is `0.0.0.0`, the first non-loopback IPv4
    /// address of this host's interfaces (for IPv6, see `relay.ipv6`).
    pub external_ip: ExternalIps,
    /// Number of event-loop shards; 0 means one per CPU core. At most 256.
    /// Default: 0.
    pub workers: usize,
    /// On SIGTERM or SIGINT the server stops taking allocations (Allocate
    /// gets 508, `/readyz` 503) and waits up to this long for the live ones
    /// to end before it exits; a second signal exits at once. At most 1h;
    /// keep systemd's `TimeoutStopSec` above it. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            realm: "turnpike".to_owned(),
            software: concat!("turnpike/", env!("CARGO_PKG_VERSION")).to_owned(),
            external_ip: ExternalIps::default(),
            workers: 0,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

pub(super) fn check(server: &ServerSection) -> Result<(), ConfigError> {
    if server.realm.is_empty() {
        return Err(ConfigError::invalid(
            "server.realm",
            "is empty; long-term credentials need a realm",
        ));
    }
    check_text("server.realm", &server.realm)?;
    check_text("server.software", &server.software)?;
    if server.shutdown_grace > Duration::from_secs(3600) {
        return Err(ConfigError::invalid("server.shutdown_grace", "must be at most 1h"));
    }
    if server.workers > MAX_WORKERS {
        return Err(ConfigError::invalid(
            "server.workers",
            format!(
                "{} is more than {MAX_WORKERS}; 0 means one per CPU core",
                server.workers
            ),
        ));
    }
    Ok(())
}

/// REALM / SOFTWARE: fewer than 128 characters, none of them control characters.
fn check_text(key: &str, value: &str) -> Result<(), ConfigError> {
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ConfigError::invalid(
            key,
            format!("is {chars} characters long; STUN allows fewer than 128"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(key, "contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::invalid_key;

    #[test]
    fn server_values_are_checked() {
        assert_eq!(invalid_key("[server]\nrealm = \"\"\n"), "server.realm");
        let long = "x".repeat(128);
        assert_eq!(
            invalid_key(&format!("[server]\nsoftware = \"{long}\"\n")),
            "server.software"
        );
        assert_eq!(invalid_key("[server]\nworkers = 257\n"), "server.workers");
    }
}
