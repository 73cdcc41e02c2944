//! `[alternate]`: the sibling instances an Allocate is sent to with 300
//! Try Alternate when this one sheds load.
//!
//! This file holds the section's struct, the doc comment on each field
//! that is the reference for its key, and [`check`]: specific unicast
//! siblings, no repeats, a DNS name for `domain`, and no `domain` or
//! `bytes_per_second` without `servers`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::value::is_valid_host;
use super::ConfigError;

/// `[alternate]`: load shedding to the other instances of a fleet with
/// 300 Try Alternate (RFC 8489 §10).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlternateSection {
    /// Siblings to send clients to, e.g. `["192.0.2.2:3478",
    /// "[2001:db8::2]:3478"]`. An authenticated Allocate that this server
    /// cannot take because it is at `limits.max_allocations`, out of relay
    /// ports, draining, or relaying more than `bytes_per_second` gets 300
    /// Try Alternate naming one of them of the client's address family, in
    /// turn, instead of 508. Each is the address and port of the sibling's
    /// listener of the same transport (one port for UDP, TCP and TLS is
    /// simplest). Specific unicast addresses, no repeats. Reloadable.
    /// Default: `[]` (no shedding).
    pub servers: Vec<SocketAddr>,
    /// ALTERNATE-DOMAIN sent to TLS clients with a 300 (RFC 8489 §14.16):
    /// the name they check the sibling's certificate against. Needs
    /// `servers`. Default: unset.
    pub domain: Option<String>,
    /// Relayed bytes a second, over all allocations and both directions,
    /// above which new Allocates are shed (measured every 250 ms over the
    /// last second; live allocations are not touched). Needs `servers`.
    /// 0: shed for allocation capacity and drain only. Default: 0.
    pub bytes_per_second: u64,
}

pub(super) fn check(alternate: &AlternateSection) -> Result<(), ConfigError> {
    for (i, server) in alternate.servers.iter().enumerate() {
        let ip = server.ip();
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) || server.port() == 0 {
            return Err(ConfigError::invalid(
                "alternate.servers",
                format!("{server} is not a unicast address and port a client can be sent to"),
            ));
        }
        if alternate.servers[..i].contains(server) {
            return Err(ConfigError::invalid(
                "alternate.servers",
                format!("{server} is listed twice"),
            ));
        }
    }
    let needs_servers = match (&alternate.domain, alternate.bytes_per_second) {
        (Some(_), _) => Some("alternate.domain"),
        (None, rate) if rate > 0 => Some("alternate.bytes_per_second"),
        _ => None,
    };
    if let Some(key) = needs_servers.filter(|_| alternate.servers.is_empty()) {
        return Err(ConfigError::invalid(key, "needs alternate.servers to send clients to"));
    }
    if let Some(domain) = &alternate.domain {
        if !is_valid_host(domain) || domain.parse::<IpAddr>().is_ok() {
            return Err(ConfigError::invalid(
                "alternate.domain",
                format!("{domain:?} is not a DNS name"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn alternate_servers_must_be_reachable_unique_and_are_needed_by_the_other_keys() {
        let ok = parse("[alternate]\nservers = [\"192.0.2.2:3478\", \"[2001:db8::2]:3478\"]\ndomain = \"turn.example.com\"\nbytes_per_second = 1000\n")
            .expect("valid");
        assert_eq!(ok.alternate.servers.len(), 2);
        for bad in ["0.0.0.0:3478", "192.0.2.2:0", "224.0.0.1:3478"] {
            assert_eq!(
                invalid_key(&format!("[alternate]\nservers = [\"{bad}\"]\n")),
                "alternate.servers"
            );
        }
        assert_eq!(
            invalid_key("[alternate]\nservers = [\"192.0.2.2:3478\", \"192.0.2.2:3478\"]\n"),
            "alternate.servers"
        );
        assert_eq!(
            invalid_key("[alternate]\ndomain = \"turn.example.com\"\n"),
            "alternate.domain"
        );
        assert_eq!(
            invalid_key("[alternate]\nbytes_per_second = 5\n"),
            "alternate.bytes_per_second"
        );
        assert_eq!(
            invalid_key("[alternate]\nservers = [\"192.0.2.2:3478\"]\ndomain = \"192.0.2.2\"\n"),
            "alternate.domain"
        );
    }
}
