//! `[alternate]`: the sibling instances an Allocate is sent to with 300
//! Try Alternate when this one sheds load.
//!
//! This file holds the section's struct, the doc comment on each field
//! that is the reference for its key, the two forms a sibling is written
//! in (an address for UDP and TCP, or a table with an address per
//! transport), and [`check`]: specific unicast addresses, a sibling's TLS
//! port apart from its TCP port, no repeats, a DNS name for `domain` and
//! a sibling with a TLS address for it, and no `bytes_per_second` without
//! `servers`. That a transport this instance listens on has no sibling
//! address is a warning (`cross.rs`): its clients get 508, as without
//! `[alternate]`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::value::is_valid_host;
use super::ConfigError;
use crate::proto::addr::Transport;
use crate::proto::server::Sibling;

/// `[alternate]`: load shedding to the other instances of a fleet with
/// 300 Try Alternate (RFC 8489 §10).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlternateSection {
    /// Siblings to send clients to. An authenticated Allocate that this
    /// server cannot take because it is at `limits.max_allocations`, out
    /// of relay ports, draining, or relaying more than `bytes_per_second`
    /// gets 300 Try Alternate naming one of them, in turn, instead of 508:
    /// its address of the client's transport and address family. Each
    /// sibling is either an address, its UDP and TCP listener (TLS
    /// clients are not sent to it: a TLS listener has a port of its own),
    /// e.g. `"192.0.2.2:3478"`, or a table with its address per transport,
    /// any of `udp`, `tcp`, `tls`, e.g. `{ udp = "192.0.2.2:3478", tcp =
    /// "192.0.2.2:3478", tls = "192.0.2.2:443" }`. A client whose
    /// transport and family no sibling has gets 508. Specific unicast
    /// addresses, no repeats. Reloadable. Default: `[]` (no shedding).
    #[serde(deserialize_with = "siblings")]
    pub servers: Vec<Sibling>,
    /// ALTERNATE-DOMAIN sent to TLS clients with a 300 (RFC 8489 §14.16):
    /// the name they check the sibling's certificate against. Needs a
    /// sibling with a `tls` address. Default: unset.
    pub domain: Option<String>,
    /// Relayed bytes a second, over all allocations and both directions,
    /// above which new Allocates are shed (measured every 250 ms over the
    /// last second; live allocations are not touched). Needs `servers`.
    /// 0: shed for allocation capacity and drain only. Default: 0.
    pub bytes_per_second: u64,
}

/// The table form of one sibling in `alternate.servers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PerTransport {
    /// The sibling's UDP listener.
    udp: Option<SocketAddr>,
    /// The sibling's TCP listener.
    tcp: Option<SocketAddr>,
    /// The sibling's TLS listener.
    tls: Option<SocketAddr>,
}

/// One entry of `alternate.servers`: `"ADDRESS:PORT"` (UDP and TCP) or
/// `{ udp = …, tcp = …, tls = … }`.
struct SiblingEntry(Sibling);

impl<'de> Deserialize<'de> for SiblingEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = SiblingEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an address and port (the sibling's UDP and TCP listener) or a table \
                     { udp = \"…\", tcp = \"…\", tls = \"…\" }",
                )
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<SiblingEntry, E> {
                let addr = text
                    .parse::<SocketAddr>()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(text), &self))?;
                Ok(SiblingEntry(Sibling::plain(addr)))
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<SiblingEntry, M::Error> {
                let PerTransport { udp, tcp, tls } =
                    PerTransport::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SiblingEntry(Sibling { udp, tcp, tls }))
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

fn siblings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Sibling>, D::Error> {
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<Sibling>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of siblings")
        }

        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Vec<Sibling>, S::Error> {
            // No capacity from the size hint: the list is the operator's,
            // but a hint is not a bound.
            let mut out = Vec::new();
            while let Some(SiblingEntry(sibling)) = seq.next_element()? {
                out.push(sibling);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(ListVisitor)
}

const TRANSPORTS: [(Transport, &str); 3] = [
    (Transport::Udp, "udp"),
    (Transport::Tcp, "tcp"),
    (Transport::Tls, "tls"),
];

pub(super) fn check(alternate: &AlternateSection) -> Result<(), ConfigError> {
    let invalid = |message: String| Err(ConfigError::invalid("alternate.servers", message));
    for (i, sibling) in alternate.servers.iter().enumerate() {
        if TRANSPORTS.iter().all(|&(t, _)| sibling.address(t).is_none()) {
            return invalid(format!(
                "entry {} names no address: give it udp, tcp or tls (or write one address for UDP and TCP)",
                i + 1
            ));
        }
        for (transport, name) in TRANSPORTS {
            let Some(server) = sibling.address(transport) else {
                continue;
            };
            let ip = server.ip();
            if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) || server.port() == 0 {
                return invalid(format!(
                    "{server} is not a unicast address and port a client can be sent to"
                ));
            }
            let mut earlier = alternate.servers[..i].iter().filter_map(|s| s.address(transport));
            if earlier.any(|a| a == server) {
                return invalid(format!("{server} is listed twice (as a {name} address)"));
            }
        }
    }
    let tcp = |addr: SocketAddr| alternate.servers.iter().any(|s| s.tcp == Some(addr));
    if let Some(both) = alternate.servers.iter().filter_map(|s| s.tls).find(|&tls| tcp(tls)) {
        return invalid(format!(
            "{both} is given as a tcp and as a tls address: a sibling serves TLS on a port of its own \
             (listen.tcp and listen.tls cannot share one), give its listen.tls address as tls"
        ));
    }
    // With siblings but none with a tls address, the domain is never
    // sent: a warning (`Config::warnings`), so that a config written for
    // the plain form still starts.
    if alternate.domain.is_some() && alternate.servers.is_empty() {
        return Err(ConfigError::invalid(
            "alternate.domain",
            "needs alternate.servers to send clients to",
        ));
    }
    if alternate.bytes_per_second > 0 && alternate.servers.is_empty() {
        return Err(ConfigError::invalid(
            "alternate.bytes_per_second",
            "needs alternate.servers to send clients to",
        ));
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
    use std::net::SocketAddr;

    use crate::config::tests::{invalid_key, parse};
    use crate::config::ConfigError;
    use crate::proto::server::Sibling;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// The reason a config with this `[alternate]` section is refused for
    /// `key`.
    fn refusal(section: &str, key: &str) -> String {
        match parse(&format!("[alternate]\n{section}\n")) {
            Err(ConfigError::Invalid { key: k, reason, .. }) if k == key => reason,
            other => panic!("expected {key} refused, got {other:?}"),
        }
    }

    #[test]
    fn alternate_servers_must_be_reachable_unique_and_are_needed_by_the_other_keys() {
        let ok =
            parse("[alternate]\nservers = [\"192.0.2.2:3478\", \"[2001:db8::2]:3478\"]\nbytes_per_second = 1000\n")
                .expect("valid");
        assert_eq!(ok.alternate.servers.len(), 2);
        for bad in ["0.0.0.0:3478", "192.0.2.2:0", "224.0.0.1:3478"] {
            assert_eq!(
                invalid_key(&format!("[alternate]\nservers = [\"{bad}\"]\n")),
                "alternate.servers"
            );
            assert_eq!(
                invalid_key(&format!(
                    "[alternate]\nservers = [{{ udp = \"192.0.2.2:3478\", tls = \"{bad}\" }}]\n"
                )),
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
            invalid_key("[alternate]\nservers = [{ udp = \"192.0.2.2:3478\", tls = \"192.0.2.2:443\" }]\ndomain = \"192.0.2.2\"\n"),
            "alternate.domain"
        );
    }

    #[test]
    fn a_sibling_is_one_address_for_udp_and_tcp_or_a_table_with_an_address_per_transport() {
        let config = parse(
            "[alternate]\nservers = [\"192.0.2.2:3478\", { udp = \"192.0.2.3:3478\", tcp = \"192.0.2.3:3478\", \
             tls = \"192.0.2.3:443\" }, { tls = \"[2001:db8::4]:5349\" }]\ndomain = \"turn.example.com\"\n",
        )
        .expect("valid");
        assert_eq!(
            config.alternate.servers,
            [
                Sibling::plain(addr("192.0.2.2:3478")),
                Sibling {
                    tls: Some(addr("192.0.2.3:443")),
                    ..Sibling::plain(addr("192.0.2.3:3478"))
                },
                Sibling {
                    tls: Some(addr("[2001:db8::4]:5349")),
                    ..Sibling::default()
                },
            ]
        );
        // The same as tables of their own.
        let tables = parse(
            "[[alternate.servers]]\nudp = \"192.0.2.3:3478\"\ntcp = \"192.0.2.3:3478\"\ntls = \"192.0.2.3:443\"\n",
        )
        .expect("valid");
        assert_eq!(tables.alternate.servers, config.alternate.servers[1..2]);
    }

    #[test]
    fn what_a_sibling_lacks_or_cannot_be_is_said() {
        let empty = refusal("servers = [\"192.0.2.2:3478\", {}]", "alternate.servers");
        assert!(empty.contains("entry 2 names no address"), "{empty}");
        let shared = refusal(
            "servers = [{ udp = \"192.0.2.2:3478\", tcp = \"192.0.2.2:3478\", tls = \"192.0.2.2:3478\" }]",
            "alternate.servers",
        );
        assert!(
            shared.contains("192.0.2.2:3478 is given as a tcp and as a tls address"),
            "{shared}"
        );
        let crossed = refusal(
            "servers = [\"192.0.2.2:3478\", { tls = \"192.0.2.2:3478\" }]",
            "alternate.servers",
        );
        assert!(crossed.contains("as a tcp and as a tls address"), "{crossed}");
        let twice = refusal(
            "servers = [{ tls = \"192.0.2.2:443\" }, { udp = \"192.0.2.3:3478\", tls = \"192.0.2.2:443\" }]",
            "alternate.servers",
        );
        assert!(
            twice.contains("192.0.2.2:443 is listed twice (as a tls address)"),
            "{twice}"
        );
        // The worked example's old shape (TLS clients could only be sent
        // to a port without TLS) still starts: it is warned about instead.
        let config = crate::config::Config::from_toml(
            "[alternate]\nservers = [\"192.0.2.2:3478\"]\ndomain = \"turn.example.com\"\n",
            "test.toml",
        )
        .expect("the plain form with a domain is accepted");
        assert!(
            config
                .warnings()
                .iter()
                .any(|w| w.contains("alternate.domain is sent to TLS clients only")),
            "{:?}",
            config.warnings()
        );
        for unknown in [
            "servers = [{ udp = \"192.0.2.2:3478\", dtls = \"192.0.2.2:443\" }]",
            "servers = [\"turn2.example.com:3478\"]",
            "servers = [3478]",
        ] {
            assert!(
                matches!(
                    parse(&format!("[alternate]\n{unknown}\n")),
                    Err(ConfigError::Parse { .. })
                ),
                "{unknown} parsed"
            );
        }
    }
}
