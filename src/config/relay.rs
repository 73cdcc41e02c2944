//! `[relay]`: where relayed transport addresses are allocated: the local
//! IPv4 and IPv6 addresses relay sockets bind to and their port range.
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: unicast
//! addresses and a range of at least two ports (EVEN-PORT reserves pairs).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use super::value::ipv6_or_off;
use super::{ConfigError, PortRange};

/// `[relay]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySection {
    /// Local IPv4 address relay sockets bind to; `"0.0.0.0"` binds all
    /// interfaces. Must not be multicast or broadcast. Default: `"0.0.0.0"`.
    pub ipv4: Ipv4Addr,
    /// Local IPv6 address IPv6 relay sockets bind to (RFC 8656
    /// REQUESTED-ADDRESS-FAMILY and dual allocations), or `"off"`. With
    /// `"::"` the advertised address is the first global IPv6 address of
    /// this host's interfaces (not loopback, not link-local); if there is
    /// none, IPv6 relaying is off and IPv6 allocations get 440. Default:
    /// `"::"`.
    #[serde(deserialize_with = "ipv6_or_off")]
    pub ipv6: Option<Ipv6Addr>,
    /// Relay ports, `"LOW-HIGH"` inclusive, with 1 <= LOW <= HIGH and at
    /// least 2 ports, because EVEN-PORT reserves pairs. Default:
    /// `"49152-65535"`, the IANA dynamic range (RFC 6335), which no
    /// registered service uses.
    pub ports: PortRange,
}

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            ipv4: Ipv4Addr::UNSPECIFIED,
            ipv6: Some(Ipv6Addr::UNSPECIFIED),
            ports: PortRange {
                low: 49152,
                high: 65535,
            },
        }
    }
}

pub(super) fn check(relay: &RelaySection) -> Result<(), ConfigError> {
    if relay.ipv4.is_multicast() || relay.ipv4.is_broadcast() {
        return Err(ConfigError::invalid(
            "relay.ipv4",
            format!("{} is not a unicast address", relay.ipv4),
        ));
    }
    if let Some(ip) = relay.ipv6.filter(|ip| ip.is_multicast()) {
        return Err(ConfigError::invalid(
            "relay.ipv6",
            format!("{ip} is not a unicast address"),
        ));
    }
    let ports = relay.ports;
    PortRange::new(ports.low, ports.high).map_err(|e| ConfigError::invalid("relay.ports", e.to_string()))?;
    if ports.len() < 2 {
        return Err(ConfigError::invalid(
            "relay.ports",
            format!("{ports} holds 1 port; at least 2 are needed since EVEN-PORT reserves pairs"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, PortRange};

    #[test]
    fn hand_built_port_range_is_checked_by_validate() {
        let mut config = Config::default();
        config.relay.ports = PortRange { low: 0, high: 10 };
        let msg = config.validate().unwrap_err().to_string();
        assert_eq!(msg, "relay.ports: low port 0 is not allowed");
    }
}
