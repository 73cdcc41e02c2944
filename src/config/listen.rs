//! `[listen]`: the addresses clients reach the server on (UDP, TCP, TLS,
//! HTTP) and the load balancers allowed to speak PROXY protocol to them.
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: something
//! to serve, no address listed twice, TCP and TLS on different ports. That
//! `listen.tls` needs `[tls]` is a rule across sections, in `cross.rs`.

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
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            udp: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tcp: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tls: Vec::new(),
            http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
            proxy_protocol_from: Vec::new(),
        }
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
}
