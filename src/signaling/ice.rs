//! The `iceServers` list handed to clients: this server's STUN and TURN
//! URLs (RFC 7064, RFC 7065) for every enabled transport, with a fresh
//! short-lived credential minted by [`crate::proto::auth::mint`], the same
//! function the TURN side verifies against.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{is_valid_host, Secret};
use crate::proto::auth;

use super::protocol::IceServer;

/// What goes into every `iceServers` list.
#[derive(Debug, Clone)]
pub struct IceConfig {
    /// `signaling.turn_host`; unset, the host of the request is used.
    pub turn_host: Option<String>,
    /// Used when neither `turn_host` nor a usable Host header is there.
    pub fallback_host: String,
    /// Ports of the first UDP, TCP and TLS listener, if any, or the ones
    /// `signaling.turn_ports` advertises instead.
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    pub tls_port: Option<u16>,
    /// The secret that mints; without one only STUN is offered.
    pub secret: Option<Secret>,
    /// The password form it mints (`auth.secret_algorithms`, the first).
    pub algorithm: auth::SecretAlgorithm,
    /// Lifetime of minted credentials.
    pub ttl: Duration,
}

impl IceConfig {
    /// `fallback` is the HTTP listener's address: its IP names this host
    /// unless it is a wildcard.
    pub fn fallback_host_for(http: SocketAddr) -> String {
        match http.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            ip => ip.to_string(),
        }
    }

    /// The list for one client: `host_header` is the Host the client used
    /// to reach us, `name` goes into the username (`<expiry>:<name>`).
    pub fn ice_servers(&self, host_header: Option<&str>, name: &str, now_unix: u64) -> Vec<IceServer> {
        let host = self
            .turn_host
            .clone()
            .or_else(|| host_header.and_then(host_of))
            .unwrap_or_else(|| self.fallback_host.clone());
        let host = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => host,
        };
        let mut servers = Vec::new();
        if let Some(port) = self.udp_port {
            servers.push(IceServer {
                urls: vec![format!("stun:{host}:{port}")],
                username: None,
                credential: None,
            });
        }
        if let Some(secret) = &self.secret {
            let turn = [
                self.udp_port.map(|p| format!("turn:{host}:{p}?transport=udp")),
                self.tcp_port.map(|p| format!("turn:{host}:{p}?transport=tcp")),
                self.tls_port.map(|p| format!("turns:{host}:{p}?transport=tcp")),
            ];
            let urls: Vec<String> = turn.into_iter().flatten().collect();
            if !urls.is_empty() {
                let minted = auth::mint(
                    self.algorithm,
                    secret.expose().as_bytes(),
                    Some(name),
                    now_unix,
                    self.ttl,
                );
                servers.push(IceServer {
                    urls,
                    username: Some(minted.username),
                    credential: Some(minted.password),
                });
            }
        }
        servers
    }
}

/// The host part of a Host header (`name`, `name:port`, `[v6]:port`), if
/// it is a well-formed host; anything else is ignored rather than copied
/// into a URL.
pub fn host_of(header: &str) -> Option<String> {
    let host = match header.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => header.rsplit_once(':').map_or(header, |(h, _)| h),
    };
    is_valid_host(host).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: Option<&str>) -> IceConfig {
        IceConfig {
            turn_host: None,
            fallback_host: "192.0.2.1".into(),
            udp_port: Some(3478),
            tcp_port: Some(3479),
            tls_port: Some(5349),
            secret: secret.map(Secret::new),
            algorithm: auth::SecretAlgorithm::Sha1,
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn lists_stun_and_every_turn_transport_with_a_minted_credential() {
        let servers = config(Some("s")).ice_servers(Some("turn.example.org:8080"), "p1", 1000);
        assert_eq!(servers[0].urls, ["stun:turn.example.org:3478"]);
        assert_eq!(
            servers[1].urls,
            [
                "turn:turn.example.org:3478?transport=udp",
                "turn:turn.example.org:3479?transport=tcp",
                "turns:turn.example.org:5349?transport=tcp"
            ]
        );
        assert_eq!(servers[1].username.as_deref(), Some("1600:p1"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(auth::ephemeral_password(auth::SecretAlgorithm::Sha1, b"s", "1600:p1").as_str())
        );
        let sha256 = IceConfig {
            algorithm: auth::SecretAlgorithm::Sha256,
            ..config(Some("s"))
        };
        let servers = sha256.ice_servers(None, "p1", 1000);
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(auth::ephemeral_password(auth::SecretAlgorithm::Sha256, b"s", "1600:p1").as_str())
        );
    }

    #[test]
    fn the_host_comes_from_config_then_the_request_then_the_listener() {
        let mut c = config(None);
        assert_eq!(c.ice_servers(Some("[::1]:8080"), "p", 0)[0].urls, ["stun:[::1]:3478"]);
        assert_eq!(
            c.ice_servers(Some("localhost"), "p", 0)[0].urls,
            ["stun:localhost:3478"]
        );
        for junk in [None, Some("bad host"), Some("a/b:1"), Some("[::1"), Some("")] {
            assert_eq!(c.ice_servers(junk, "p", 0)[0].urls, ["stun:192.0.2.1:3478"], "{junk:?}");
        }
        c.turn_host = Some("2001:db8::1".into());
        assert_eq!(c.ice_servers(Some("x:1"), "p", 0)[0].urls, ["stun:[2001:db8::1]:3478"]);
    }

    #[test]
    fn without_a_secret_or_a_transport_there_is_no_turn_entry() {
        assert_eq!(config(None).ice_servers(None, "p", 0).len(), 1);
        let mut c = config(Some("s"));
        (c.udp_port, c.tcp_port, c.tls_port) = (None, None, None);
        assert!(c.ice_servers(None, "p", 0).is_empty());
    }
}
