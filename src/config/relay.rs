//! `[relay]`: where relayed transport addresses are allocated: the local
//! IPv4 and IPv6 addresses relay sockets bind to and their port range;
//! and the kernel fast path (`fast_path`, `docs/xdp.md`).
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: unicast
//! addresses, a range of at least two ports (EVEN-PORT reserves pairs),
//! and with `fast_path = "xdp"` at least one interface, each a name the
//! kernel could have (shorter than `IFNAMSIZ`, no `/`, no whitespace).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use super::value::ipv6_or_off;
use super::{Config, ConfigError, PortRange};

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
    /// The kernel fast path: `"off"`, or `"xdp"` to attach turnpike's XDP
    /// program to `fast_path_interfaces` at start (native mode, else
    /// generic) and detach it at exit. Attaching needs `CAP_BPF` and
    /// `CAP_NET_ADMIN` (root); when it fails the server warns and relays
    /// in user space, as with `"off"`. `turnpike check-config` says
    /// whether this host can run it. See `docs/xdp.md`. Default: `"off"`.
    pub fast_path: FastPath,
    /// The interfaces the XDP program is attached to, with `fast_path =
    /// "xdp"` (at least one): those clients' and peers' datagrams arrive
    /// on. Names as `ip link` shows them, at most 15 bytes. Default: `[]`.
    pub fast_path_interfaces: Vec<String>,
}

/// `relay.fast_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FastPath {
    /// Every datagram through user space.
    #[default]
    Off,
    /// The XDP program on `relay.fast_path_interfaces`.
    Xdp,
}

/// `IFNAMSIZ`: an interface name and its terminating NUL.
const IFNAMSIZ: usize = 16;

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            ipv4: Ipv4Addr::UNSPECIFIED,
            ipv6: Some(Ipv6Addr::UNSPECIFIED),
            ports: PortRange {
                low: 49152,
                high: 65535,
            },
            fast_path: FastPath::Off,
            fast_path_interfaces: Vec::new(),
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
    check_interfaces(relay)
}

fn check_interfaces(relay: &RelaySection) -> Result<(), ConfigError> {
    let key = "relay.fast_path_interfaces";
    if relay.fast_path == FastPath::Xdp && relay.fast_path_interfaces.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "fast_path = \"xdp\" needs at least one interface to attach to".to_owned(),
        ));
    }
    for (i, name) in relay.fast_path_interfaces.iter().enumerate() {
        let bad = |why: &str| Err(ConfigError::invalid(key, format!("{name:?} {why}")));
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return bad("is not an interface name (1 to 15 bytes)");
        }
        if name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return bad("is not an interface name (no '/', ':', whitespace or control characters, not . or ..)");
        }
        if relay.fast_path_interfaces[..i].contains(name) {
            return bad("is listed twice");
        }
    }
    Ok(())
}

/// With `fast_path = "xdp"`, what keeps the fast path from relaying:
/// addresses only the kernel's routing resolves, and byte rates (the
/// program holds no token bucket). The server runs either way; those
/// datagrams stay in user space.
pub(super) fn fast_path_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.relay.fast_path != FastPath::Xdp {
        return warnings;
    }
    let advice =
        "the fast path relays only for listeners and relays bound to one address; bind it to the interface's address";
    for addr in config.listen.udp.iter().filter(|a| a.ip().is_unspecified()) {
        warnings.push(format!("listen.udp {addr} is a wildcard address: {advice}"));
    }
    if config.relay.ipv4.is_unspecified() {
        warnings.push(format!("relay.ipv4 is {}: {advice}", config.relay.ipv4));
    }
    if let Some(v6) = config.relay.ipv6.filter(|ip| ip.is_unspecified()) {
        warnings.push(format!("relay.ipv6 is {v6}: {advice} (or \"off\")"));
    }
    for (key, rate) in [
        (
            "limits.allocation_bytes_per_second",
            config.limits.allocation_bytes_per_second,
        ),
        ("limits.user_bytes_per_second", config.limits.user_bytes_per_second),
    ] {
        if rate > 0 {
            warnings.push(format!(
                "{key} is set: allocations under a byte rate are relayed in user space only (the fast path cannot count tokens)"
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, PortRange};

    #[test]
    fn the_fast_path_warns_about_wildcards_and_byte_rates_only_when_on() {
        let mut config = Config::default();
        config.listen.udp = vec!["0.0.0.0:3478".parse().unwrap(), "10.0.0.1:3478".parse().unwrap()];
        config.limits.user_bytes_per_second = 1000;
        assert_eq!(super::fast_path_warnings(&config), Vec::<String>::new(), "off");
        config.relay.fast_path = super::FastPath::Xdp;
        let warnings = super::fast_path_warnings(&config).join("\n");
        for expected in [
            "listen.udp 0.0.0.0:3478",
            "relay.ipv4 is 0.0.0.0",
            "relay.ipv6 is ::",
            "limits.user_bytes_per_second",
        ] {
            assert!(warnings.contains(expected), "{expected} in {warnings}");
        }
        assert!(!warnings.contains("10.0.0.1"), "{warnings}");
        config.listen.udp.remove(0);
        config.relay.ipv4 = "10.0.0.1".parse().unwrap();
        config.relay.ipv6 = None;
        config.limits.user_bytes_per_second = 0;
        assert_eq!(super::fast_path_warnings(&config), Vec::<String>::new());
    }

    #[test]
    fn hand_built_port_range_is_checked_by_validate() {
        let mut config = Config::default();
        config.relay.ports = PortRange { low: 0, high: 10 };
        let msg = config.validate().unwrap_err().to_string();
        assert_eq!(msg, "relay.ports: low port 0 is not allowed");
    }

    fn fast_path_error(toml: &str) -> String {
        Config::from_toml(&format!("[relay]\n{toml}"), "<test>")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn xdp_needs_an_interface() {
        let msg = fast_path_error("fast_path = \"xdp\"");
        assert!(
            msg.contains("relay.fast_path_interfaces") && msg.contains("at least one"),
            "{msg}"
        );
    }

    #[test]
    fn interface_names_are_checked() {
        for name in ["", "sixteen_bytes_xx", "a/b", "eth0:1", "a b", ".", "..", "a\\u0000b"] {
            let msg = fast_path_error(&format!("fast_path = \"xdp\"\nfast_path_interfaces = [\"{name}\"]"));
            assert!(msg.contains("is not an interface name"), "{name:?}: {msg}");
        }
        let msg = fast_path_error("fast_path = \"xdp\"\nfast_path_interfaces = [\"eth0\", \"eth0\"]");
        assert!(msg.contains("listed twice"), "{msg}");
    }

    #[test]
    fn fast_path_values() {
        let config = Config::from_toml(
            "[relay]\nfast_path = \"xdp\"\nfast_path_interfaces = [\"fifteen_bytes_x\", \"veth0\"]",
            "<test>",
        )
        .unwrap();
        assert_eq!(config.relay.fast_path, super::FastPath::Xdp);
        assert_eq!(config.relay.fast_path_interfaces, ["fifteen_bytes_x", "veth0"]);
        assert_eq!(Config::default().relay.fast_path, super::FastPath::Off);
        let msg = fast_path_error("fast_path = \"ebpf\"");
        assert!(msg.contains("unknown variant"), "{msg}");
    }
}
