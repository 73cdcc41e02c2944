//! The [`Plan`]: everything the shards share, derived once from a
//! validated config and the bound listening addresses, and derived again
//! on reload from what [`reloadable`] lets a running server change.
//!
//! A plan is immutable: a reload builds a new one and sends it to every
//! shard, so no shard ever sees half of one config and half of another.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::socket::interface_ips;
use crate::config::{Config, LimitsSection};
use crate::proto::auth::{Credentials, CredentialsConfig, PasswordAlgorithm, SecretAlgorithm};
use crate::proto::peer_filter::{self, PeerRules};
use crate::proto::server::{AddressPair, Alternates, NatDiscovery, RelayHairpin, ServerConfig};

/// Everything shards share, derived once from the config.
pub(super) struct Plan {
    pub(super) server: ServerConfig,
    realm: String,
    nonce_ttl: Duration,
    users: Vec<(String, [u8; 16])>,
    users_sha256: Vec<(String, [u8; 32])>,
    password_algorithms: Vec<PasswordAlgorithm>,
    userhash: bool,
    secrets: Vec<Vec<u8>>,
    secret_algorithms: Vec<SecretAlgorithm>,
    pub(super) rules: PeerRules,
    pub(super) relay_bind: Ipv4Addr,
    pub(super) relay_advertised: Ipv4Addr,
    /// IPv6 relays: bind and advertised address, if IPv6 relaying is on.
    pub(super) relay_v6: Option<(Ipv6Addr, Ipv6Addr)>,
    max_credential_lifetime: Duration,
    /// `auth.nonce_keys`, hashed to HMAC keys; empty: the process's key.
    nonce_keys: Vec<[u8; 32]>,
    /// `alternate.bytes_per_second`: the relayed rate above which
    /// Allocates are shed; 0: never for bandwidth.
    pub(super) shed_above_bytes_per_second: u64,
}

impl Plan {
    /// The shard's credential checker. Nonces are made with the first
    /// configured nonce key, or without one with `process_key`, the
    /// process's own, so that they stay valid across reloads.
    pub(super) fn credentials(&self, process_key: [u8; 32]) -> Credentials {
        let (nonce_key, older_nonce_keys) = match self.nonce_keys.split_first() {
            Some((first, older)) => (*first, older.to_vec()),
            None => (process_key, Vec::new()),
        };
        Credentials::new(CredentialsConfig {
            realm: self.realm.clone(),
            users: self.users.clone(),
            users_sha256: self.users_sha256.clone(),
            password_algorithms: self.password_algorithms.clone(),
            userhash: self.userhash,
            secrets: self.secrets.clone(),
            secret_algorithms: self.secret_algorithms.clone(),
            nonce_ttl: self.nonce_ttl,
            nonce_key,
            older_nonce_keys,
            max_credential_lifetime: self.max_credential_lifetime,
        })
    }

    /// `listeners`: every bound UDP and TCP listening address.
    pub(super) fn new(config: &Config, listeners: &[SocketAddr]) -> Plan {
        let interfaces = interface_ips();
        let relay_bind = config.relay.ipv4;
        let external = &config.server.external_ip;
        let relay_advertised = match external.public_v4() {
            Some(public) => public,
            None if !relay_bind.is_unspecified() => relay_bind,
            None => interfaces
                .iter()
                .find_map(|ip| match ip {
                    IpAddr::V4(v4) if !v4.is_loopback() => Some(*v4),
                    _ => None,
                })
                .unwrap_or(Ipv4Addr::LOCALHOST),
        };
        let relay_v6 = config.relay.ipv6.and_then(|bind| {
            let advertised = match (external.public_v6(), bind.is_unspecified()) {
                (Some(public), _) => Some(public),
                (None, false) => Some(bind),
                // Only a global address is advertised by default: loopback,
                // link-local and unique local (fc00::/7) ones cannot be
                // reached from the internet, and the default peer policy
                // itself refuses them as peers.
                (None, true) => interfaces.iter().find_map(|ip| match ip {
                    IpAddr::V6(v6) if peer_filter::is_global(*ip) => Some(*v6),
                    _ => None,
                }),
            };
            advertised.map(|advertised| (bind, advertised))
        });
        let mut own_ips: Vec<IpAddr> = interfaces.clone();
        own_ips.push(IpAddr::V4(relay_advertised));
        own_ips.extend(relay_v6.map(|(_, advertised)| IpAddr::V6(advertised)));
        own_ips.extend(external.public());
        own_ips.extend(listeners.iter().map(|a| a.ip()));
        let software = Some(config.server.software.clone()).filter(|s| !s.is_empty());
        // A public address may not be reachable from this host (no hairpin
        // NAT): our relays reach each other on the local address instead:
        // the one named, else the bind address, else loopback.
        let hairpin_pairs = external.entries().map(|entry| {
            let bind = match entry.public {
                IpAddr::V4(_) => IpAddr::V4(relay_bind),
                IpAddr::V6(_) => relay_v6.map_or(IpAddr::V6(Ipv6Addr::LOCALHOST), |(bind, _)| IpAddr::V6(bind)),
            };
            let local = entry.local.unwrap_or(match bind.is_unspecified() {
                true if bind.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                true => IpAddr::V6(Ipv6Addr::LOCALHOST),
                false => bind,
            });
            (entry.public, local)
        });
        let hairpin = RelayHairpin::new(hairpin_pairs, config.relay.ports.as_range());
        Plan {
            realm: config.server.realm.clone(),
            nonce_ttl: config.auth.nonce_ttl,
            max_credential_lifetime: config.auth.max_credential_lifetime,
            nonce_keys: config
                .auth
                .nonce_keys
                .iter()
                .map(|key| {
                    let digest = ring::digest::digest(&ring::digest::SHA256, key.expose().as_bytes());
                    let mut out = [0u8; 32];
                    out.copy_from_slice(digest.as_ref());
                    out
                })
                .collect(),
            server: ServerConfig {
                software,
                relay_ip_v4: Some(relay_advertised),
                relay_ip_v6: relay_v6.map(|(_, advertised)| advertised),
                max_allocation_lifetime: config.limits.max_allocation_lifetime,
                max_permissions: config.limits.max_permissions_per_allocation,
                max_channels: config.limits.max_channels_per_allocation,
                hairpin,
                allocation_rate: config.limits.allocation_bytes_per_second,
                challenge_rate: config.limits.challenge_bytes_per_second,
                max_peer_connections_per_allocation: config.limits.max_peer_connections_per_allocation,
                max_peer_connections: config.limits.max_peer_connections,
                alternates: Alternates::new(config.alternate.servers.clone(), config.alternate.domain.clone()),
                // The config refuses a pair AddressPair::new would not take.
                nat_discovery: NatDiscovery::new(
                    config
                        .listen
                        .nat_discovery_pairs()
                        .into_iter()
                        .filter_map(|(primary, alternate)| AddressPair::new(primary, alternate)),
                ),
            },
            shed_above_bytes_per_second: config.alternate.bytes_per_second,
            users: config
                .auth
                .users
                .iter()
                .filter(|u| u.password.is_some() || u.key.is_some())
                .map(|u| (u.name.clone(), config.user_key(u)))
                .collect(),
            users_sha256: config
                .auth
                .users
                .iter()
                .filter_map(|u| Some((u.name.clone(), config.user_sha256_key(u)?)))
                .collect(),
            password_algorithms: config.auth.password_algorithms.clone(),
            userhash: config.auth.userhash,
            secrets: config
                .auth
                .resolved_secrets
                .iter()
                .map(|s| s.expose().as_bytes().to_vec())
                .collect(),
            secret_algorithms: config.auth.secret_algorithms.clone(),
            rules: PeerRules {
                allow: config.peers.allow.clone(),
                deny: config.peers.deny.clone(),
                own_ips,
                relay_ports: config.relay.ports.as_range(),
                relay_ips: std::iter::once(IpAddr::V4(relay_advertised))
                    .chain(relay_v6.map(|(_, advertised)| IpAddr::V6(advertised)))
                    .collect(),
                service_ports: listeners.iter().map(|a| a.port()).collect(),
            },
            relay_bind,
            relay_advertised,
            relay_v6,
        }
    }
}

/// `new` as the running server can apply it: the relay addresses stay
/// those of `running` (the relay sockets and the peer filter's own-port
/// rule depend on them). Also names the settings that differ from
/// `running` but take effect only after a restart.
pub(super) fn reloadable(running: &Config, new: &Config) -> (Config, Vec<&'static str>) {
    let (old, fresh) = (&running.limits, &new.limits);
    let connection_limits = |l: &LimitsSection| {
        (
            l.max_connections,
            l.max_connections_per_source,
            l.tls_handshakes_per_source,
            l.connection_setup_timeout,
            l.connection_idle_timeout,
            l.max_frame_size,
        )
    };
    // The PROXY protocol's sources are applied by a reload
    // (`ProxyProtocol::set_trusted`); the listeners are not.
    let listeners = |config: &Config| crate::config::ListenSection {
        proxy_protocol_from: Vec::new(),
        ..config.listen.clone()
    };
    let restart_only = [
        ("listen", listeners(running) != listeners(new)),
        ("relay", running.relay != new.relay),
        ("server.workers", running.server.workers != new.server.workers),
        (
            "server.external_ip",
            running.server.external_ip != new.server.external_ip,
        ),
        ("tls.cert/tls.key/[tls.acme]", running.tls != new.tls),
        ("fleet", !running.fleet.same_as(&new.fleet)),
        (
            "signaling.share_tls_port",
            running.signaling.share_tls_port != new.signaling.share_tls_port,
        ),
        (
            "limits.max_connections (in all and per source), tls_handshakes_per_source, the connection timeouts and max_frame_size",
            connection_limits(old) != connection_limits(fresh),
        ),
    ];
    let mut effective = new.clone();
    effective.relay = running.relay.clone();
    effective.server.external_ip = running.server.external_ip.clone();
    let differ = restart_only.iter().filter(|(_, d)| *d).map(|(name, _)| *name).collect();
    (effective, differ)
}
