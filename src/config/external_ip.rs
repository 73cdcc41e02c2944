//! `server.external_ip`: the public addresses of a server behind a 1:1 NAT
//! or a load balancer, one per address family, each optionally naming the
//! local address it maps onto (coturn's `external-ip=PUBLIC/LOCAL`).
//!
//! Written as one string or a list of them:
//! `"203.0.113.7"`, `["203.0.113.7", "2001:db8::7"]`,
//! `["203.0.113.7/10.0.0.5"]`. The public address of a family is what the
//! relays of that family advertise in XOR-RELAYED-ADDRESS; the local one
//! is where this host's own relays reach each other when the public one
//! does not hairpin (`proto::server::hairpin`).
//!
//! Invariants (held by parsing and [`check`]): at most one entry per
//! family; every address unicast and specified; a local address of the
//! public one's family, and equal to the relay's bind address of that
//! family when that is not the wildcard (relays cannot be reached on
//! another one). [`warnings`] adds the start-up warning about an
//! advertised address clients elsewhere cannot reach.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::{Config, ConfigError, RelaySection};

/// One `PUBLIC` or `PUBLIC/LOCAL` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    /// Advertised to clients.
    pub public: IpAddr,
    /// Where the relays of this family are reached from this host; `None`:
    /// their bind address (or loopback, when they bind the wildcard).
    pub local: Option<IpAddr>,
}

impl FromStr for ExternalIp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (public, local) = match text.split_once('/') {
            Some((public, local)) => (public, Some(local)),
            None => (text, None),
        };
        let parse = |part: &str| {
            part.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{text:?}: {part:?} is not an IP address"))
        };
        let public = parse(public)?;
        let local = local.map(parse).transpose()?;
        if local.is_some_and(|local| local.is_ipv4() != public.is_ipv4()) {
            return Err(format!("{text:?}: the local address is not of the public one's family"));
        }
        Ok(ExternalIp { public, local })
    }
}

impl fmt::Display for ExternalIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            Some(local) => write!(f, "{}/{local}", self.public),
            None => write!(f, "{}", self.public),
        }
    }
}

/// Every `server.external_ip` entry, at most one per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalIps(Vec<ExternalIp>);

impl ExternalIps {
    /// The entries given.
    pub fn new(entries: Vec<ExternalIp>) -> ExternalIps {
        ExternalIps(entries)
    }

    /// The public IPv4 address, if any.
    pub fn public_v4(&self) -> Option<Ipv4Addr> {
        self.0.iter().find_map(|e| match e.public {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
    }

    /// The public IPv6 address, if any.
    pub fn public_v6(&self) -> Option<Ipv6Addr> {
        self.0.iter().find_map(|e| match e.public {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        })
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = ExternalIp> + '_ {
        self.0.iter().copied()
    }

    /// Every public address.
    pub fn public(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.entries().map(|e| e.public)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for ExternalIps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let texts = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(text) => vec![text],
            OneOrMany::Many(texts) => texts,
        };
        let entries = texts
            .iter()
            .map(|text| text.parse())
            .collect::<Result<Vec<ExternalIp>, String>>()
            .map_err(|e| D::Error::custom(format_args!("server.external_ip: {e}")))?;
        Ok(ExternalIps(entries))
    }
}

/// The rules serde cannot express; `relay` is needed for the local
/// addresses.
pub(super) fn check(external: &ExternalIps, relay: &RelaySection) -> Result<(), ConfigError> {
    let invalid = |reason: String| Err(ConfigError::invalid("server.external_ip", reason));
    for (i, entry) in external.0.iter().enumerate() {
        if external.0[..i]
            .iter()
            .any(|e| e.public.is_ipv4() == entry.public.is_ipv4())
        {
            return invalid(format!(
                "{entry}: a second address of its family; relays have one address per family"
            ));
        }
        for ip in [Some(entry.public), entry.local].into_iter().flatten() {
            if ip.is_unspecified() {
                return invalid(format!("{entry}: {ip} is not a real address"));
            }
            if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
                return invalid(format!("{entry}: {ip} is not a unicast address"));
            }
        }
        let bind = match entry.public {
            IpAddr::V4(_) => Some(IpAddr::V4(relay.ipv4)),
            IpAddr::V6(_) => relay.ipv6.map(IpAddr::V6),
        };
        match (bind, entry.local) {
            (None, _) => {
                return invalid(format!(
                    "{entry}: an IPv6 address, but relay.ipv6 is \"off\" (there is no IPv6 relay to advertise)"
                ))
            }
            (Some(bind), Some(local)) if !bind.is_unspecified() && bind != local => {
                return invalid(format!(
                    "{entry}: the local address must be the relays' bind address {bind} (relay.ipv4 / relay.ipv6)"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether clients elsewhere on the Internet can never reach `ip`:
/// loopback, private (RFC 1918), shared (RFC 6598), link-local, unique
/// local (RFC 4193).
fn is_unreachable_from_outside(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64;
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || shared
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xFE00) == 0xFC00 || (first & 0xFFC0) == 0xFE80
        }
    }
}

/// Start-up warnings: an address handed to clients (an external IP, the
/// relays' bind address, `signaling.turn_host`) that clients elsewhere
/// cannot reach, while a listener takes clients from anywhere: they would
/// authenticate, then get a relay (or URL) they cannot use — the
/// commonest fault of a TURN server behind NAT.
pub(super) fn warnings(config: &Config) -> Vec<String> {
    let listen = &config.listen;
    let public_listener = listen
        .udp
        .iter()
        .chain(&listen.tcp)
        .chain(&listen.tls)
        .find(|a| a.ip().is_unspecified() || !is_unreachable_from_outside(a.ip()));
    let Some(listener) = public_listener else {
        return Vec::new();
    };
    let external = &config.server.external_ip;
    let relay = (external.public_v4().is_none() && !config.relay.ipv4.is_unspecified())
        .then_some(("relay.ipv4", IpAddr::V4(config.relay.ipv4)));
    let turn_host = config.signaling.turn_host.as_deref().and_then(|h| h.parse().ok());
    let advertised = external
        .public()
        .map(|ip| ("server.external_ip", ip))
        .chain(relay)
        .chain(turn_host.map(|ip| ("signaling.turn_host", ip)));
    advertised
        .filter(|(_, ip)| is_unreachable_from_outside(*ip))
        .map(|(key, ip)| {
            format!(
                "{key} {ip} is a loopback or private address, but listener {listener} takes clients from \
                 anywhere: clients elsewhere cannot reach it; set server.external_ip to this server's \
                 public address (\"PUBLIC/LOCAL\" behind 1:1 NAT)"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn one_address_a_list_and_public_local_pairs_are_read() {
        let entries = |text: &str| {
            let config = parse(&format!("[server]\nexternal_ip = {text}")).unwrap();
            config
                .server
                .external_ip
                .entries()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(entries("\"203.0.113.7\""), ["203.0.113.7"]);
        assert_eq!(
            entries("[\"2001:db8::7\", \"203.0.113.7/10.0.0.5\"]"),
            ["2001:db8::7", "203.0.113.7/10.0.0.5"]
        );
        let config = parse("[server]\nexternal_ip = [\"2001:db8::7\", \"203.0.113.7\"]").unwrap();
        assert_eq!(
            config.server.external_ip.public_v4().map(|ip| ip.to_string()),
            Some("203.0.113.7".into())
        );
        assert_eq!(
            config.server.external_ip.public_v6().map(|ip| ip.to_string()),
            Some("2001:db8::7".into())
        );
    }

    #[test]
    fn entries_that_cannot_be_served_are_refused() {
        for text in [
            "\"0.0.0.0\"",
            "\"224.0.0.1\"",
            "\"255.255.255.255\"",
            "[\"203.0.113.7\", \"198.51.100.1\"]",
            "\"203.0.113.7/0.0.0.0\"",
        ] {
            assert_eq!(
                invalid_key(&format!("[server]\nexternal_ip = {text}\n")),
                "server.external_ip",
                "{text}"
            );
        }
        for malformed in ["\"not-an-ip\"", "\"203.0.113.7/2001:db8::1\""] {
            let error = parse(&format!("[server]\nexternal_ip = {malformed}\n")).unwrap_err();
            assert!(error.to_string().contains("server.external_ip"), "{error}");
        }
        // The local address must be where the relays are bound.
        let bound = "[relay]\nipv4 = \"10.0.0.5\"\n[server]\nexternal_ip = ";
        assert_eq!(
            invalid_key(&format!("{bound}\"203.0.113.7/10.0.0.6\"")),
            "server.external_ip"
        );
        assert!(parse(&format!("{bound}\"203.0.113.7/10.0.0.5\"")).is_ok());
        // No IPv6 relay, nothing to advertise for it.
        let off = "[relay]\nipv6 = \"off\"\n[server]\nexternal_ip = \"2001:db8::7\"\n";
        assert_eq!(invalid_key(off), "server.external_ip");
    }

    #[test]
    fn check_config_warns_about_an_advertised_address_clients_cannot_reach() {
        let warned = |text: &str| {
            let warnings = parse(text).unwrap().warnings();
            warnings
                .into_iter()
                .filter(|w| w.contains("loopback or private"))
                .collect::<Vec<_>>()
        };
        let public = "[listen]\nudp = [\"0.0.0.0:3478\"]\n";
        for (advertised, key) in [
            ("[server]\nexternal_ip = \"10.0.0.5\"", "server.external_ip 10.0.0.5"),
            ("[server]\nexternal_ip = [\"fd00::5\"]", "server.external_ip fd00::5"),
            ("[relay]\nipv4 = \"192.168.1.2\"", "relay.ipv4 192.168.1.2"),
            (
                "[signaling]\nturn_host = \"127.0.0.1\"",
                "signaling.turn_host 127.0.0.1",
            ),
            (
                "[server]\nexternal_ip = \"100.64.0.1\"",
                "server.external_ip 100.64.0.1",
            ),
        ] {
            let warnings = warned(&format!("{public}{advertised}\n"));
            assert_eq!(warnings.len(), 1, "{advertised}: {warnings:?}");
            assert!(warnings[0].starts_with(key), "{warnings:?}");
        }
        // A public address, or a server only this machine can reach.
        assert!(warned(&format!("{public}[server]\nexternal_ip = \"198.51.100.1/10.0.0.5\"\n")).is_empty());
        assert!(
            warned("[listen]\nudp = [\"127.0.0.1:3478\"]\ntcp = []\n[server]\nexternal_ip = \"127.0.0.2\"\n")
                .is_empty()
        );
    }
}
