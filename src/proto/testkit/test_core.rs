//! The test core's configuration, written once: the unit tests of
//! [`crate::proto::server`], the fuzz crate and the black-box fuzz smoke
//! test start from [`core_config`] and [`core_credentials`] and change
//! what they test with struct-update syntax:
//!
//! ```ignore
//! let config = ServerConfig { max_channels: 1, ..core_config() };
//! let credentials = CredentialsConfig { users, ..core_credentials(REALM) };
//! ```
//!
//! The relay addresses are documentation addresses (RFC 5737, RFC 3849):
//! values only, nothing is ever sent to them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::proto::auth::{CredentialsConfig, PasswordAlgorithm, SecretAlgorithm};
use crate::proto::server::{Alternates, NatDiscovery, RelayHairpin, ServerConfig};

/// The IPv4 relay address of [`core_config`].
pub const RELAY_IP_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// The IPv6 relay address of [`core_config`].
pub const RELAY_IP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

/// The test core: SOFTWARE `turnpike-test`, both relay families, an hour
/// of allocation lifetime, four permissions and four channels an
/// allocation, no rate limits, four peer connections a TCP allocation and
/// sixteen in all, no hairpin changes, no alternate servers and no
/// alternate address (RFC 5780).
pub fn core_config() -> ServerConfig {
    ServerConfig {
        software: Some("turnpike-test".to_owned()),
        relay_ip_v4: Some(RELAY_IP_V4),
        relay_ip_v6: Some(RELAY_IP_V6),
        max_allocation_lifetime: Duration::from_secs(3600),
        max_permissions: 4,
        max_channels: 4,
        hairpin: RelayHairpin::default(),
        allocation_rate: 0,
        challenge_rate: 0,
        max_peer_connections_per_allocation: 4,
        max_peer_connections: 16,
        alternates: Alternates::default(),
        nat_discovery: NatDiscovery::default(),
    }
}

/// The test core's credentials in `realm`: no users and no secrets yet
/// (a test names its own), SHA-1 ephemeral passwords, nonces valid for an
/// hour under a fixed key (`[3; 32]`), ephemeral usernames at most a
/// week ahead, and RFC 5389's MD5 keys only (no RFC 8489 offer).
pub fn core_credentials(realm: &str) -> CredentialsConfig {
    CredentialsConfig {
        realm: realm.to_owned(),
        users: Vec::new(),
        secrets: Vec::new(),
        secret_algorithms: vec![SecretAlgorithm::Sha1],
        nonce_ttl: Duration::from_secs(3600),
        nonce_key: [3; 32],
        older_nonce_keys: Vec::new(),
        max_credential_lifetime: Duration::from_secs(7 * 24 * 3600),
        users_sha256: Vec::new(),
        password_algorithms: vec![PasswordAlgorithm::Md5],
        userhash: false,
    }
}
