//! `[listen]`: the addresses clients reach the server on (UDP, TCP, TLS,
//! HTTP), the alternate UDP address of RFC 5780 NAT behaviour discovery,
//! and the load balancers allowed to speak PROXY protocol to them.
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: something
//! to serve, no address listed twice, TCP and TLS on different ports, and
//! an alternate address that makes the four UDP addresses of RFC 5780 §6
//! with the listener it pairs with. That `listen.tls` needs `[tls]` is a
//! rule across sections, in `cross.rs`.

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::value::{addr_or_off, cidrs};
use super::{Cidr, ConfigError};

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenSection {
    /// UDP addresses answering STUN and TURN, e.g. `["0.0.0.0:3478",
    /// "[::]:3478"]`. Must not repeat an address; port 0 picks a free port
    /// (tests). Default: `["0.0.0.0:3478"]`.
    pub udp: Vec<SocketAddr>,
    /// TCP addresses answering STUN and TURN (`turn:host:3478?transport=tcp`),
    /// for clients whose network blocks UDP. Same rules as `udp`; `udp` and
    /// `tcp` may share a port number. At least one of the two must be
    /// non-empty. Default: `["0.0.0.0:3478"]`.
    pub tcp: Vec<SocketAddr>,
    /// TLS-over-TCP addresses answering STUN and TURN
    /// (`turns:host:5349?transport=tcp`; 443 passes the strictest
    /// firewalls). Needs `[tls]`. Same rules as `udp`. Default: `[]`.
    pub tls: Vec<SocketAddr>,
    /// HTTP address of the signaling endpoint (`/ws`), `/ice-servers` and
    /// the demo page (`/`), or `"off"`. Served over TLS with the `[tls]`
    /// certificate when `signaling.tls` is true. Default: `"127.0.0.1:8080"`:
    /// only this machine reaches it until you choose otherwise.
    #[serde(deserialize_with = "addr_or_off")]
    pub http: Option<SocketAddr>,
    /// CIDRs of the load balancers in front of the TCP, TLS and HTTP
    /// listeners, e.g. `["10.0.0.0/8"]`. A connection from one of them must
    /// start with a PROXY protocol header (haproxy's `send-proxy` or
    /// `send-proxy-v2`, detected) within `limits.connection_setup_timeout`
    /// (the HTTP listener: 10 s), else it is closed; the client it names is
    /// then the connection's address everywhere (auth, nonces, per-source
    /// limits, logs). A connection from anywhere else that starts with a
    /// PROXY header is closed. UDP is never proxied. A reload (SIGHUP)
    /// applies a change to the connections accepted after it. Default: `[]`.
    #[serde(deserialize_with = "cidrs")]
    pub proxy_protocol_from: Vec<Cidr>,
    /// NAT behaviour discovery (RFC 5780): a second UDP address A2:P2 of
    /// this host, at most one per family, e.g. `["192.0.2.2:3479"]`. It
    /// pairs with the first `udp` address A1:P1 of its family, which must
    /// then be a specific address (not `0.0.0.0` or `[::]`) with a fixed
    /// port; A2 and P2 must differ from A1 and P1. The server also
    /// listens on A1:P2, A2:P1 and A2:P2 (full STUN/TURN listeners, none
    /// of them in `udp`), Binding answers over UDP carry OTHER-ADDRESS and
    /// RESPONSE-ORIGIN, and CHANGE-REQUEST is answered from the address it
    /// asks for. Without it OTHER-ADDRESS is never sent and CHANGE-REQUEST
    /// gets 420. Default: `[]`.
    pub udp_alternate: Vec<SocketAddr>,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            udp: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tcp: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tls: Vec::new(),
            http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
            proxy_protocol_from: Vec::new(),
            udp_alternate: Vec::new(),
        }
    }
}

impl ListenSection {
    /// The (primary, alternate) address pairs of RFC 5780: each
    /// `udp_alternate` with the first `udp` address of its family (one
    /// exists in a checked config).
    pub fn nat_discovery_pairs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.udp_alternate
            .iter()
            .filter_map(|alternate| {
                let primary = self.udp.iter().find(|a| a.is_ipv4() == alternate.is_ipv4())?;
                Some((*primary, *alternate))
            })
            .collect()
    }
}

pub(super) fn check(listen: &ListenSection) -> Result<(), ConfigError> {
    if listen.udp.is_empty() && listen.tcp.is_empty() && listen.tls.is_empty() {
        return Err(ConfigError::invalid(
            "listen",
            "udp, tcp and tls are all empty: nothing to serve",
        ));
    }
    if let Some(addr) = listen.tcp.iter().find(|a| a.port() != 0 && listen.tls.contains(a)) {
        return Err(ConfigError::invalid(
            "listen.tls",
            format!("{addr} is also in listen.tcp; TCP and TLS need different ports"),
        ));
    }
    let lists = [
        ("listen.udp", &listen.udp),
        ("listen.tcp", &listen.tcp),
        ("listen.tls", &listen.tls),
    ];
    for (key, addrs) in lists {
        for (i, addr) in addrs.iter().enumerate() {
            // Port 0 asks the OS for a fresh port each time, so it never collides.
            if addr.port() != 0 && addrs.get(..i).is_some_and(|before| before.contains(addr)) {
                return Err(ConfigError::invalid(key, format!("{addr} is listed twice")));
            }
        }
    }
    check_alternates(listen)
}

/// `udp_alternate`: one per family, each making with its primary the four
/// distinct UDP addresses of RFC 5780 §6, none of which `udp` lists
/// already (a second socket on an address would share its datagrams).
fn check_alternates(listen: &ListenSection) -> Result<(), ConfigError> {
    let invalid = |why: String| Err(ConfigError::invalid("listen.udp_alternate", why));
    for (i, alternate) in listen.udp_alternate.iter().enumerate() {
        let family = if alternate.is_ipv4() { "IPv4" } else { "IPv6" };
        if alternate.ip().is_unspecified() || alternate.port() == 0 {
            return invalid(format!(
                "{alternate}: needs a specific address and port (answers name the address they leave from)"
            ));
        }
        if listen.udp_alternate[..i]
            .iter()
            .any(|a| a.is_ipv4() == alternate.is_ipv4())
        {
            return invalid(format!("has two {family} addresses; one per family"));
        }
        let Some(primary) = listen.udp.iter().find(|a| a.is_ipv4() == alternate.is_ipv4()) else {
            return invalid(format!(
                "{alternate}: listen.udp has no {family} address to pair it with"
            ));
        };
        if primary.ip().is_unspecified() || primary.port() == 0 {
            return invalid(format!(
                "{alternate} pairs with {primary}, the first {family} address of listen.udp, which must be a \
                 specific address with a fixed port (answers name the address they leave from)"
            ));
        }
        if primary.ip() == alternate.ip() || primary.port() == alternate.port() {
            return invalid(format!(
                "{alternate} must differ from {primary} in both address and port (RFC 5780 §6)"
            ));
        }
        let crossed = [
            SocketAddr::new(primary.ip(), alternate.port()),
            SocketAddr::new(alternate.ip(), primary.port()),
            *alternate,
        ];
        if let Some(taken) = crossed.iter().find(|a| listen.udp.contains(a)) {
            return invalid(format!(
                "{taken} is in listen.udp; with {alternate} the server listens on it for RFC 5780 already"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn proxy_sources_parse_as_cidrs_and_a_wide_one_is_warned_about() {
        let config = parse("[listen]\nproxy_protocol_from = [\"10.0.0.5\", \"2001:db8::/48\"]\n").expect("valid");
        assert_eq!(config.listen.proxy_protocol_from.len(), 2);
        assert!(config.listen.proxy_protocol_from[0].contains("10.0.0.5".parse().unwrap()));
        assert!(!config.warnings().iter().any(|w| w.contains("proxy_protocol_from")));
        let err = parse("[listen]\nproxy_protocol_from = [\"10.0.0.0/33\"]\n").expect_err("no such network");
        assert!(err.to_string().contains("\"10.0.0.0/33\""), "{err}");
        let config = parse("[listen]\nproxy_protocol_from = [\"0.0.0.0/0\"]\n").expect("valid");
        assert!(config
            .warnings()
            .iter()
            .any(|w| w.starts_with("listen.proxy_protocol_from has 0.0.0.0/0")));
    }

    #[test]
    fn listen_udp_must_be_non_empty_and_distinct() {
        let msg = parse("[listen]\nudp = []\ntcp = []\n").unwrap_err().to_string();
        assert_eq!(
            msg,
            "test.toml: listen: udp, tcp and tls are all empty: nothing to serve"
        );
        assert_eq!(invalid_key("[listen]\ntls = [\"0.0.0.0:5349\"]\n"), "listen.tls");
        assert_eq!(
            invalid_key(
                "[listen]\ntcp = [\"0.0.0.0:5349\"]\ntls = [\"0.0.0.0:5349\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\n"
            ),
            "listen.tls"
        );
        assert!(parse("[listen]\nudp = []\n").is_ok(), "TCP alone is enough");
        assert_eq!(
            invalid_key("[listen]\ntcp = [\"0.0.0.0:3478\", \"0.0.0.0:3478\"]\n"),
            "listen.tcp"
        );
        assert_eq!(
            invalid_key("[listen]\nudp = [\"0.0.0.0:3478\", \"0.0.0.0:3478\"]\n"),
            "listen.udp"
        );
        assert!(parse("[listen]\nudp = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n").is_ok());
    }

    #[test]
    fn an_alternate_address_pairs_with_the_first_udp_address_of_its_family() {
        let config = parse(
            "[listen]\nudp = [\"[2001:db8::1]:3478\", \"192.0.2.1:3478\", \"192.0.2.9:3478\"]\n\
             udp_alternate = [\"192.0.2.2:3479\", \"[2001:db8::2]:3479\"]\n",
        )
        .expect("valid");
        let pairs = config.listen.nat_discovery_pairs();
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            pairs,
            [
                (addr("192.0.2.1:3478"), addr("192.0.2.2:3479")),
                (addr("[2001:db8::1]:3478"), addr("[2001:db8::2]:3479"))
            ]
        );
        assert!(crate::config::Config::default().listen.nat_discovery_pairs().is_empty());
        let refused = [
            // The default listener is the wildcard.
            "[listen]\nudp_alternate = [\"192.0.2.2:3479\"]\n",
            "[listen]\nudp = [\"192.0.2.1:0\"]\nudp_alternate = [\"192.0.2.2:3479\"]\n",
            "[listen]\nudp = [\"192.0.2.1:3478\"]\nudp_alternate = [\"0.0.0.0:3479\"]\n",
            "[listen]\nudp = [\"192.0.2.1:3478\"]\nudp_alternate = [\"192.0.2.2:0\"]\n",
            "[listen]\nudp = [\"192.0.2.1:3478\"]\nudp_alternate = [\"192.0.2.1:3479\"]\n",
            "[listen]\nudp = [\"192.0.2.1:3478\"]\nudp_alternate = [\"192.0.2.2:3478\"]\n",
            "[listen]\nudp = [\"192.0.2.1:3478\"]\nudp_alternate = [\"[2001:db8::2]:3479\"]\n",
            "[listen]\nudp = [\"192.0.2.1:3478\"]\nudp_alternate = [\"192.0.2.2:3479\", \"192.0.2.3:3479\"]\n",
            "[listen]\nudp = [\"192.0.2.1:3478\", \"192.0.2.1:3479\"]\nudp_alternate = [\"192.0.2.2:3479\"]\n",
        ];
        for toml in refused {
            assert_eq!(invalid_key(toml), "listen.udp_alternate", "{toml}");
        }
    }
}
