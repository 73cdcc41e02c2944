//! Configuration: the TOML schema, its built-in defaults and its validation.
//!
//! The server reads one TOML file in which every section and every key is
//! optional; whatever is left out takes the default written on its field
//! here, and the defaults are meant to be safe on a public server. Key names
//! follow the configuration sketch in the project's design doc (docs/design.md),
//! which documentation, examples and external tests rely on. The doc comment
//! on each field is the reference for that key; `config.example.toml` repeats
//! it for operators and a test keeps the two in step.
//!
//! Text becomes a usable [`Config`] in two steps:
//!
//! 1. serde parses the TOML. Every struct has `deny_unknown_fields`, so a
//!    misspelt key is an error with its line and column rather than a
//!    setting that is silently ignored.
//! 2. [`Config::validate`] checks what the types cannot express (lengths,
//!    ranges, exactly one of `password` / `key`, ...) and reads
//!    `auth.secrets_file` into [`AuthSection::resolved_secrets`] and
//!    `admin.key_file` into [`AdminSection::resolved_key`].
//!
//! [`Config::load`] and [`Config::from_toml`] do both; call `validate` on its
//! own only for a config built or changed in code.
//!
//! Secrets are held in [`Secret`], whose `Debug` is redacted, so a config can
//! be logged with `{:?}`, and no error message ever quotes a secret.
//!
//! Files: this one holds the schema (the section structs, their defaults and
//! the doc comment that is the reference for each key) and loading;
//! `value.rs` the value types the schema is written in ([`Secret`],
//! [`PortRange`], the `"off"` and CIDR parsers); `validate.rs` the rules of
//! step 2, and the user keys that follow from them; `error.rs`
//! [`ConfigError`], through which both steps report.

mod error;
mod fleet;
mod validate;
mod value;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::proto::auth::SecretAlgorithm;
pub use crate::proto::peer_filter::Cidr;
pub use error::ConfigError;
pub use fleet::{is_fleet_name, FleetSection};
pub use validate::{is_valid_host, MAX_WORKERS};
use value::{addr_or_off, cidrs, ipv6_or_off};
pub use value::{PortRange, PortRangeError, Secret};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: identity of the server on the wire and its thread count.
    pub server: ServerSection,
    /// `[listen]`: addresses clients reach the server on.
    pub listen: ListenSection,
    /// `[tls]`: certificate and key for `listen.tls`.
    pub tls: TlsSection,
    /// `[relay]`: where relayed transport addresses are allocated.
    pub relay: RelaySection,
    /// `[auth]`: shared secrets, long-term users, credential and nonce lifetimes.
    pub auth: AuthSection,
    /// `[peers]`: changes to the built-in list of refused peer addresses.
    pub peers: PeersSection,
    /// `[limits]`: quotas on allocations, permissions and channels.
    pub limits: LimitsSection,
    /// `[alternate]`: sibling instances that take the Allocates this one
    /// sheds.
    pub alternate: AlternateSection,
    /// `[signaling]`: the WebSocket rooms, `/ice-servers` and the demo page
    /// served on `listen.http`.
    pub signaling: SignalingSection,
    /// `[log]`: log filter and format.
    pub log: LogSection,
    /// `[admin]`: the operator's admin API.
    pub admin: AdminSection,
    /// `[fleet]`: signaling rooms shared with other instances through Redis.
    pub fleet: FleetSection,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Realm of the long-term credentials (RFC 8489 §9.2), sent in REALM and
    /// hashed into every user key, so changing it invalidates precomputed
    /// `auth.users` keys. Non-empty, fewer than 128 characters, no control
    /// characters. Default: `"turnpike"`.
    pub realm: String,
    /// Value of the SOFTWARE attribute in responses; `""` leaves the
    /// attribute out. Fewer than 128 characters, no control characters.
    /// Default: `"turnpike/"` followed by the version.
    pub software: String,
    /// Relay IP advertised in XOR-RELAYED-ADDRESS instead of the address the
    /// relay sockets are bound to, for a server behind a 1:1 NAT (a cloud VM
    /// whose public IP maps onto a private one). It also counts as one of
    /// this server's own addresses for relay-to-relay delivery. Must be a
    /// unicast IPv4 address while relays are IPv4 only. Default: unset:
    /// `relay.ipv4` is advertised, or, when that is `0.0.0.0`, the first
    /// non-loopback IPv4 address of this host's interfaces.
    pub external_ip: Option<IpAddr>,
    /// Number of event-loop shards; 0 means one per CPU core. At most 256.
    /// Default: 0.
    pub workers: usize,
    /// On SIGTERM or SIGINT the server stops taking allocations (Allocate
    /// gets 508, `/readyz` 503) and waits up to this long for the live ones
    /// to end before it exits; a second signal exits at once. At most 1h;
    /// keep systemd's `TimeoutStopSec` above it. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            realm: "turnpike".to_owned(),
            software: concat!("turnpike/", env!("CARGO_PKG_VERSION")).to_owned(),
            external_ip: None,
            workers: 0,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

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

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the certificate chain, leaf first. Read at start and
    /// again on SIGHUP (a renewed certificate takes effect for new
    /// connections; live ones and their allocations stay). A relative path
    /// is taken from the config file's directory. Required when
    /// `listen.tls` is non-empty.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Same rules
    /// as `cert`.
    pub key: Option<PathBuf>,
}

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

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Shared secrets for short-lived credentials (the "TURN REST API"
    /// scheme, coturn's `use-auth-secret`): username
    /// `<unix-expiry>[:<name>]`, password
    /// base64(HMAC-SHA1(secret, username)). The first secret mints
    /// (`turnpike credentials`, signaling) and all of them verify, so a
    /// secret is rotated by putting the new one first and removing the old
    /// one once `credential_ttl` has passed. Each must be non-empty. With no
    /// secrets and no users the server generates a random secret at start,
    /// for the demo. Default: `[]`.
    pub secrets: Vec<Secret>,
    /// The HMAC of short-lived credentials' passwords: `"sha1"` (coturn's
    /// format, what TURN REST API backends compute) or `"sha256"`
    /// (base64(HMAC-SHA256(secret, username)), for policies without
    /// SHA-1). The first mints (`turnpike credentials`, signaling) and all
    /// of them verify, so `["sha256", "sha1"]` moves a fleet and its
    /// backends over without a flag day. Non-empty, no repeats. Default:
    /// `["sha1"]`.
    pub secret_algorithms: Vec<SecretAlgorithm>,
    /// File with more shared secrets, appended after `secrets`: one secret
    /// per line, surrounding whitespace trimmed, empty lines and lines
    /// starting with `#` skipped. Keeps secrets out of the TOML. A relative
    /// path is taken from the config file's directory. A file that cannot be
    /// read or holds no secret is an error. Default: unset.
    pub secrets_file: Option<PathBuf>,
    /// Lifetime of minted short-lived credentials. At least 1s. Default:
    /// `"24h"`.
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
    /// Longest lifetime of a short-lived credential this server accepts:
    /// a username whose expiry lies further ahead is refused (401), so a
    /// backend cannot mint credentials that live for years. At least
    /// `credential_ttl`, at most 10 years. Default: `"7d"`.
    #[serde(with = "humantime_serde")]
    pub max_credential_lifetime: Duration,
    /// Age after which a nonce is answered with 438 Stale Nonce and the
    /// client retries with a fresh one. Between 10s and 1h. Default: `"10m"`.
    #[serde(with = "humantime_serde")]
    pub nonce_ttl: Duration,
    /// Keys for nonces shared by the instances of a fleet, so that a
    /// client sent by DNS or a load balancer to another instance than the
    /// one that challenged it is not answered 438 Stale Nonce first. The
    /// first makes nonces and all of them check them, so a key is rotated
    /// (with a reload, no restart) by putting the new one first and
    /// dropping the old one once `nonce_ttl` has passed. At most 4, each at
    /// least 16 characters. Default: `[]`, a random key per process.
    pub nonce_keys: Vec<Secret>,
    /// Long-term credential users, one `[[auth.users]]` table each.
    /// Default: none.
    pub users: Vec<User>,
    /// Every shared secret in order: `secrets`, then those read from
    /// `secrets_file`; the first one mints. Filled by [`Config::validate`]
    /// (empty before it) and not a TOML key.
    #[serde(skip)]
    pub resolved_secrets: Vec<Secret>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            secrets: Vec::new(),
            secret_algorithms: vec![SecretAlgorithm::Sha1],
            secrets_file: None,
            credential_ttl: Duration::from_secs(24 * 3600),
            max_credential_lifetime: Duration::from_secs(7 * 24 * 3600),
            nonce_ttl: Duration::from_secs(600),
            nonce_keys: Vec::new(),
            users: Vec::new(),
            resolved_secrets: Vec::new(),
        }
    }
}

impl AuthSection {
    /// The secret new short-lived credentials are minted with: the first of
    /// [`resolved_secrets`](Self::resolved_secrets), if any.
    pub fn minting_secret(&self) -> Option<&Secret> {
        self.resolved_secrets.first()
    }

    /// The password form new short-lived credentials are minted in.
    pub fn minting_algorithm(&self) -> SecretAlgorithm {
        self.secret_algorithms.first().copied().unwrap_or_default()
    }
}

/// One `[[auth.users]]` table: a long-term credential user.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    /// User name, as the client sends it in USERNAME. Non-empty, fewer than
    /// 509 bytes (RFC 8489 §14.3), no control characters, unique.
    pub name: String,
    /// Password; the key is then MD5(name:realm:password) (RFC 8489 §9.2.2).
    /// Exactly one of `password` and `key`.
    pub password: Option<Secret>,
    /// Precomputed key instead of a password: 32 hex digits of
    /// MD5(name:realm:password), as coturn's `turnadmin -k` prints, so the
    /// password itself stays out of the config. Only valid for the realm it
    /// was computed with. Exactly one of `password` and `key`.
    pub key: Option<Secret>,
}

/// `[peers]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeersSection {
    /// CIDRs that may be relayed to even though the built-in deny list
    /// (loopback, private, link-local, ...) refuses them, e.g.
    /// `["127.0.0.0/8", "::1/128"]` for local tests. `deny` wins over it,
    /// and this server's own service ports stay refused. A bare address
    /// means a single host. Default: `[]`.
    #[serde(deserialize_with = "cidrs")]
    pub allow: Vec<Cidr>,
    /// Extra CIDRs to refuse as peers, on top of the built-in deny list;
    /// checked first, so it wins over `allow`. Default: `[]`.
    #[serde(deserialize_with = "cidrs")]
    pub deny: Vec<Cidr>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Allocations on the whole server; an Allocate beyond gets 508
    /// Insufficient Capacity. At least 1. Default: 10000.
    pub max_allocations: usize,
    /// Allocations per username; an Allocate beyond gets 486 Allocation
    /// Quota Reached. At least 1. Default: 20.
    pub max_allocations_per_user: usize,
    /// Allocations one source address may hold at once, over all users,
    /// so that a client handed a fresh username per signaling session
    /// cannot take every allocation from one address; beyond, 486. At least
    /// 1. A reload applies to new allocations. Default: 1000 (a large NAT).
    pub max_allocations_per_source: usize,
    /// Cap on the LIFETIME a client may request for an allocation; a longer
    /// request is granted this. At least 60s. Default: `"1h"`, the maximum
    /// RFC 8656 recommends.
    #[serde(with = "humantime_serde")]
    pub max_allocation_lifetime: Duration,
    /// Permissions (peer IPs) per allocation; a CreatePermission beyond gets
    /// 508 Insufficient Capacity. At least 1. Default: 64.
    pub max_permissions_per_allocation: usize,
    /// Channels per allocation; a ChannelBind beyond gets 508 Insufficient
    /// Capacity. From 1 to 4096. Default: 64.
    pub max_channels_per_allocation: usize,
    /// TCP connections open at once, over all listeners; a connection
    /// beyond is closed as soon as it is accepted. At least 1. Default: 4096.
    pub max_connections: usize,
    /// TCP and TLS connections one source address may hold open at once,
    /// so one address cannot take every slot without credentials; beyond,
    /// a connection is closed as soon as it is accepted. At least 1; above
    /// `max_connections` it is `max_connections`. Default: 256 (a NAT of
    /// many TCP users).
    pub max_connections_per_source: usize,
    /// TLS handshakes one source address may start a second (twice that
    /// in a burst); beyond, a connection is closed as soon as it is
    /// accepted. At least 1. Default: 20.
    pub tls_handshakes_per_source: u64,
    /// TCP peer connections (RFC 6062) one TCP allocation may hold at once,
    /// whether being connected, waiting for their ConnectionBind or
    /// spliced; a Connect beyond gets 508 Insufficient Capacity and a peer
    /// connecting in beyond is closed at once. A reload keeps the
    /// connections already open. From 1 to 1024. Default: 16.
    pub max_peer_connections_per_allocation: usize,
    /// TCP peer connections on the whole server, with the same rules. Each
    /// holds a file descriptor, and a bound one a data connection too
    /// (which `max_connections` counts). From 1 to 1048576. Default: 4096.
    pub max_peer_connections: usize,
    /// Time a new connection has to complete its first STUN or ChannelData
    /// message; slower ones (or ones sending garbage) are closed, so that
    /// idle or trickling connections cannot pile up. From 1s to 5m.
    /// Default: `"10s"`.
    #[serde(with = "humantime_serde")]
    pub connection_setup_timeout: Duration,
    /// A connection without an allocation that receives nothing for this
    /// long is closed. At least 1s. Default: `"2m"`.
    #[serde(with = "humantime_serde")]
    pub connection_idle_timeout: Duration,
    /// Largest STUN or ChannelData message accepted on a connection, in
    /// bytes; a bigger one closes the connection. This bounds the memory a
    /// connection can hold. From 576 to 65552. Default: 16384 (media
    /// packets are under 1500 bytes).
    pub max_frame_size: usize,
    /// Bytes a second one allocation may relay, both directions together
    /// (payload bytes, as in the metrics); packets beyond are dropped, as
    /// a congested link would, and an RFC 6062 splice beyond is slowed. Half a second of it (at least 16 KiB) may
    /// pass in a burst. 0: no limit. A reload applies to new allocations.
    /// Default: 0. (A 720p video call needs about 300 kB/s each way.)
    pub allocation_bytes_per_second: u64,
    /// Bytes a second all allocations of one username may relay together,
    /// across all shards, with the same burst rule. 0: no limit. A reload
    /// applies to users with no allocation yet. Default: 0.
    pub user_bytes_per_second: u64,
    /// Bytes a second of 401 and 438 challenges one source address may
    /// get, on each worker, with four seconds of it in a burst; beyond it
    /// unauthenticated requests from that address go unanswered (a real
    /// client retransmits). Bounds what a spoofed source can reflect at a
    /// victim. A challenge is about 60 bytes, so the default passes some
    /// 270 a second from one address (a large NAT). 0: no limit.
    /// Default: 16384.
    pub challenge_bytes_per_second: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_allocations: 10_000,
            max_allocations_per_user: 20,
            max_allocations_per_source: 1000,
            max_allocation_lifetime: Duration::from_secs(3600),
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            max_connections: 4096,
            max_connections_per_source: 256,
            tls_handshakes_per_source: 20,
            max_peer_connections_per_allocation: 16,
            max_peer_connections: 4096,
            connection_setup_timeout: Duration::from_secs(10),
            connection_idle_timeout: Duration::from_secs(120),
            max_frame_size: 16_384,
            allocation_bytes_per_second: 0,
            user_bytes_per_second: 0,
            challenge_bytes_per_second: 16_384,
        }
    }
}

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

/// `[signaling]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingSection {
    /// Serve `listen.http` over TLS (HTTPS, WSS) with the `[tls]`
    /// certificate, which browsers need for getUserMedia anywhere but on
    /// localhost. Needs `tls.cert` and `tls.key`. Default: `false`.
    pub tls: bool,
    /// Also serve everything of `listen.http` (signaling, the demo page,
    /// `/ice-servers`, `/metrics`, health) on every `listen.tls` address,
    /// for networks that let only HTTPS out: one TLS port (443) then
    /// carries `turns:`, the page and `wss://…/ws`. A connection is told
    /// apart by ALPN (`stun.turn`, RFC 7443, or `http/1.1`) or, with none,
    /// by its first bytes (STUN or an HTTP method; anything else is
    /// closed). `listen.http` may then be `"off"`, or stay as it is
    /// (`signaling.tls` still says whether it is HTTPS). Until its service
    /// is known a connection is the TLS listener's: its handshake and
    /// first bytes are held to `limits.connection_setup_timeout`,
    /// `limits.tls_handshakes_per_source` and the stream connection
    /// limits; from then on an HTTP one counts against
    /// `signaling.max_connections` like those of `listen.http`. The
    /// `turns:` URL handed out names the first TLS listener's port. Needs
    /// `listen.tls`; read at start. Default: `false`.
    pub share_tls_port: bool,
    /// Most peers in one room; a join beyond gets `room-full`. Every peer
    /// connects to every other (full mesh), so each uploads its media
    /// `room_size - 1` times. From 2 to 64. Default: 6.
    pub room_size: usize,
    /// Most rooms at once; a join that would open one more gets
    /// `room-full`. From 1 to 1048576. Default: 1000.
    pub max_rooms: usize,
    /// Most rooms opened from one source address (an IPv6 source counts by
    /// its /64) that exist at once; a join that would open one more gets
    /// `room-full`, while joining a room that exists costs nothing. A room
    /// is charged to the address that opened it until its last peer
    /// leaves. Keeps one address from squatting the room limit. From 1 to
    /// 1048576; above `max_rooms` it has no effect. Default: 16.
    pub max_rooms_per_source: usize,
    /// Most HTTP connections open at once, WebSockets included; one beyond
    /// is closed as soon as it is accepted. Another 8 connections are kept
    /// back for `/metrics`, `/healthz` and `/readyz` only, so monitoring
    /// still answers when this is reached. From 1 to 1048576. Default: 1000.
    pub max_connections: usize,
    /// Most HTTP connections open at once from one source address (an IPv6
    /// source counts by its /64), WebSockets included; one beyond is closed
    /// as soon as it is accepted. Keeps one address from taking
    /// `max_connections` (and monitoring with it); requests for monitoring
    /// count too, so scrape from another address. Behind a reverse proxy
    /// every client has the proxy's address (unless it is listed in
    /// `listen.proxy_protocol_from`): raise it to `max_connections`
    /// there. From 1 to 1048576; above `max_connections` it has no effect.
    /// Default: 64.
    pub max_connections_per_source: usize,
    /// Largest client message, in bytes; a bigger one is answered with
    /// `too-large` and dropped (the socket stays). A message over four times
    /// this closes the socket (WebSocket close 1009). From 1024 to 1048576.
    /// Default: 65536.
    pub max_message_size: usize,
    /// Messages per second a client may send, averaged; bursts of twice as
    /// many pass. Beyond, messages are answered with `rate-limited` and
    /// dropped. At least 1. Default: 50.
    pub messages_per_second: u32,
    /// Bytes that may wait for one WebSocket client to read them (each
    /// message counts its length plus 64). A message that would go beyond
    /// drops the session at once (close 1008), and its room sees
    /// `peer-left`: that client is not reading. The default holds a full
    /// room's worth of negotiation for a client that stalls for a moment:
    /// five peers each sending a large offer (16 KiB with simulcast) and
    /// thirty candidates (300 B each) twice over (an ICE restart) is about
    /// 250 KiB, and it is four messages of the default `max_message_size`.
    /// It also caps what a client that never reads costs: at most
    /// `max_connections` times this (250 MiB at the defaults) in all. From
    /// 65536 to 67108864; below twice `max_message_size` (plus the message
    /// overhead) it is raised to that, so two messages of the largest size
    /// always fit. Default: 262144.
    pub max_outbox_bytes: usize,
    /// Interval of the server's WebSocket pings. At least 1s. Default:
    /// `"15s"`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client from which nothing (not even a pong) arrives for this long
    /// is dropped, and its room sees `peer-left`. At least `ping_interval`.
    /// Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// Protocol v1.1 resume (`docs/signaling.md`): a client that joined
    /// with `"resume": true` and whose socket drops without a `leave` keeps
    /// its place in the room this long; what is addressed to it meanwhile
    /// is queued (within `max_outbox_bytes`) and replayed in order when it
    /// resumes with its token, and its room sees `peer-left` only once
    /// this runs out. `"0s"` turns resume off. At most 10m; read at start
    /// (like the other signaling limits, a reload does not change it).
    /// Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
    /// Secret that gates `/ws`: a client must then connect with
    /// `?token=<expiry>.<signature>`, where expiry is a Unix time and the
    /// signature is base64url (no padding) of HMAC-SHA256(secret, expiry),
    /// or with `?token=<expiry>.<room>.<signature>`, signed over
    /// `"<expiry>.<room>"`, whose holder may join that room only (others
    /// get `unauthorized`); `turnpike token [--room R]` mints one. Without
    /// it anyone who reaches `listen.http` may join rooms, and so get TURN
    /// credentials (warned at start when `listen.http` is not loopback).
    /// Default: unset.
    pub token_secret: Option<Secret>,
    /// Key an application backend presents as `Authorization: Bearer
    /// <key>` to `GET /ice-servers`; unset, that endpoint does not exist
    /// (404). Default: unset.
    pub api_key: Option<Secret>,
    /// Origins (`"https://app.example.org"`) whose pages may open `/ws`
    /// and read `/ice-servers` (CORS); a WebSocket upgrade from another
    /// origin gets 403. Empty means same-origin: a WebSocket upgrade whose
    /// Origin is absent or names the host and port of its Host header (the
    /// demo page's own) is allowed, any other gets 403; on a loopback
    /// address the Host must then be loopback too (`localhost`, 127.0.0.1,
    /// `[::1]`), which defeats DNS rebinding. Behind a proxy that rewrites
    /// Host, list the public origin here. Default: `[]`.
    pub allowed_origins: Vec<String>,
    /// Host name or IP put in the STUN/TURN URLs handed to clients. Unset,
    /// the host the client reached the HTTP endpoint by (its Host header)
    /// is used, which is right when both run on one machine under one
    /// name. Default: unset.
    pub turn_host: Option<String>,
}

impl Default for SignalingSection {
    fn default() -> Self {
        SignalingSection {
            tls: false,
            share_tls_port: false,
            room_size: 6,
            max_rooms: 1000,
            max_rooms_per_source: 16,
            max_connections: 1000,
            max_connections_per_source: 64,
            max_message_size: 65_536,
            messages_per_second: 50,
            max_outbox_bytes: 262_144,
            ping_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(30),
            resume_grace: Duration::from_secs(30),
            token_secret: None,
            api_key: None,
            allowed_origins: Vec::new(),
            turn_host: None,
        }
    }
}

/// `[admin]`: the operator's admin API (`crate::admin`), off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin API (HTTP/1.1, JSON, no TLS): lists
    /// allocations, ends them, revokes usernames. Must be a loopback
    /// address: the key travels in clear, so reach it from another host
    /// through SSH or a TLS-terminating proxy on this one. Set, `key` or
    /// `key_file` is required. Default: unset (off).
    pub listen: Option<SocketAddr>,
    /// The key callers present as `Authorization: Bearer <key>`; at least
    /// 24 characters (e.g. `openssl rand -base64 32`). Exactly one of
    /// `key` and `key_file` when `listen` is set; reloaded on SIGHUP.
    /// Default: unset.
    pub key: Option<Secret>,
    /// File whose first line is the key, to keep it out of the TOML. A
    /// relative path is taken from the config file's directory. Default:
    /// unset.
    pub key_file: Option<PathBuf>,
    /// The key from `key` or `key_file`. Filled by [`Config::validate`]
    /// and not a TOML key.
    #[serde(skip)]
    pub resolved_key: Option<Secret>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Log filter, a tracing-subscriber `EnvFilter` directive such as
    /// `"info"` or `"turnpike=debug,info"`; `"off"` silences logging. The
    /// `RUST_LOG` environment variable, when set, overrides it. Default:
    /// `"info"`.
    pub level: String,
    /// Log line format: `"text"` for people, `"json"` (one object per line)
    /// for log collectors. Default: `"text"`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Value of `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `"text"`: human-readable lines.
    #[default]
    Text,
    /// `"json"`: one JSON object per line.
    Json,
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    ///
    /// A relative `auth.secrets_file` is taken from the directory of `path`.
    /// Errors name the file; TOML and schema errors add toml's "TOML parse
    /// error at line L, column C" and a snippet, validation errors the key
    /// (e.g. `relay.ports: low port 0 is not allowed`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let origin = path.display().to_string();
        let mut config = Config::parse(&text, &origin)?;
        if let Some(dir) = path.parent() {
            let files = [
                &mut config.auth.secrets_file,
                &mut config.tls.cert,
                &mut config.tls.key,
                &mut config.admin.key_file,
            ];
            for file in files.into_iter().flatten() {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        config.validate().map_err(|e| e.in_origin(&origin))?;
        Ok(config)
    }

    /// Parses and validates `text`; `origin` names it in error messages (a
    /// path, or something like `"<string>"`). A relative
    /// `auth.secrets_file` is taken from the current directory.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, origin)?;
        config.validate().map_err(|e| e.in_origin(origin))?;
        Ok(config)
    }

    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            origin: origin.to_owned(),
            error: Box::new(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config.example.toml");

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml")
    }

    pub(super) fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn default_config_validates() {
        let mut config = Config::default();
        config.validate().expect("defaults are valid");
        assert!(config.auth.resolved_secrets.is_empty());
        assert_eq!(config.relay.ports.to_string(), "49152-65535");
        assert_eq!(
            config.server.software,
            format!("turnpike/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = parse("").expect("empty config");
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()),);
    }

    #[test]
    fn example_config_parses_validates_and_equals_the_defaults() {
        let config = Config::from_toml(EXAMPLE, "config.example.toml").unwrap_or_else(|e| panic!("{e}"));
        // The example documents the defaults: it must not drift from them.
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()),);
    }

    #[test]
    fn example_config_mentions_every_key() {
        let keys = [
            "[server]",
            "realm",
            "software",
            "external_ip",
            "workers",
            "shutdown_grace",
            "[listen]",
            "udp",
            "[relay]",
            "ipv4",
            "ports",
            "[auth]",
            "secrets",
            "secrets_file",
            "secret_algorithms",
            "credential_ttl",
            "max_credential_lifetime",
            "nonce_ttl",
            "[[auth.users]]",
            "name",
            "password",
            "key",
            "[peers]",
            "allow",
            "deny",
            "[limits]",
            "max_allocations",
            "max_allocations_per_user",
            "max_allocations_per_source",
            "max_allocation_lifetime",
            "max_permissions_per_allocation",
            "max_channels_per_allocation",
            "max_peer_connections_per_allocation",
            "max_peer_connections",
            "max_connections_per_source",
            "tls_handshakes_per_source",
            "allocation_bytes_per_second",
            "user_bytes_per_second",
            "challenge_bytes_per_second",
            "[alternate]",
            "servers",
            "domain",
            "bytes_per_second",
            "http",
            "[signaling]",
            "share_tls_port",
            "room_size",
            "max_rooms",
            "max_rooms_per_source",
            "max_connections_per_source",
            "max_message_size",
            "max_outbox_bytes",
            "messages_per_second",
            "ping_interval",
            "heartbeat_timeout",
            "resume_grace",
            "token_secret",
            "api_key",
            "allowed_origins",
            "turn_host",
            "[log]",
            "level",
            "format",
            "[admin]",
            "key_file",
            "[fleet]",
            "redis_url",
            "instance_id",
            "membership_ttl",
            "key_prefix",
        ];
        for key in keys {
            assert!(EXAMPLE.contains(key), "config.example.toml lacks {key}");
        }
    }

    #[test]
    fn full_config_is_read_into_typed_fields() {
        let config = parse(
            r#"
            [server]
            realm = "example.org"
            software = ""
            external_ip = "203.0.113.7"
            workers = 4

            [listen]
            udp = ["127.0.0.1:3478", "[::1]:3478"]

            [relay]
            ipv4 = "10.0.0.5"
            ports = "40000-40099"

            [auth]
            secrets = ["new", "old"]
            credential_ttl = "12h"
            nonce_ttl = "5m"

            [[auth.users]]
            name = "alice"
            password = "s3cret"

            [[auth.users]]
            name = "bob"
            key = "8493FBC53BA582FB4C044C456BDC40EB"

            [peers]
            allow = ["127.0.0.0/8", "::1/128"]
            deny = ["198.51.100.0/24"]

            [limits]
            max_allocations = 5
            max_allocations_per_user = 2
            max_allocation_lifetime = "30m"
            max_permissions_per_allocation = 8
            max_channels_per_allocation = 4

            [log]
            level = "turnpike=debug,info"
            format = "json"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.server.realm, "example.org");
        assert_eq!(config.server.software, "");
        assert_eq!(
            config.server.external_ip,
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
        );
        assert_eq!(config.server.workers, 4);
        assert_eq!(config.listen.udp.len(), 2);
        assert_eq!(config.relay.ipv4, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(config.relay.ports, PortRange::new(40000, 40099).unwrap());
        assert_eq!(config.auth.credential_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(config.auth.nonce_ttl, Duration::from_secs(300));
        let resolved: Vec<&str> = config.auth.resolved_secrets.iter().map(Secret::expose).collect();
        assert_eq!(resolved, ["new", "old"]);
        assert_eq!(config.auth.minting_secret().map(Secret::expose), Some("new"));
        assert_eq!(config.auth.users.len(), 2);
        assert_eq!(config.peers.allow.len(), 2);
        assert_eq!(config.peers.allow[0].to_string(), "127.0.0.0/8");
        assert_eq!(config.peers.deny.len(), 1);
        assert_eq!(config.limits.max_allocations, 5);
        assert_eq!(config.limits.max_allocation_lifetime, Duration::from_secs(1800));
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn durations_are_humantime_strings() {
        let config =
            parse("[auth]\nnonce_ttl = \"10m\"\ncredential_ttl = \"1h 30m\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.auth.nonce_ttl, Duration::from_secs(600));
        assert_eq!(config.auth.credential_ttl, Duration::from_secs(5400));
    }

    #[test]
    fn unknown_key_is_reported_with_its_name_and_line() {
        let err = parse("[server]\nrealm = \"x\"\nrelm = \"typo\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
        assert!(msg.starts_with("test.toml: "), "{msg}");
        assert!(msg.contains("relm"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn unknown_section_is_reported() {
        let msg = parse("[turn]\nx = 1\n").unwrap_err().to_string();
        assert!(msg.contains("turn"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn wrong_type_is_reported_with_its_line() {
        let msg = parse("[server]\nrealm = \"x\"\n\nworkers = \"four\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 4"), "{msg}");
        let msg = parse("[limits]\nmax_allocation_lifetime = 3600\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn malformed_duration_is_reported_with_its_line() {
        let msg = parse("[auth]\nnonce_ttl = \"ten minutes\"\n").unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn secrets_file_is_appended_after_inline_secrets() {
        let dir = std::env::temp_dir().join(format!("turnpike-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secrets = dir.join("secrets");
        std::fs::write(&secrets, "# rotated 2024-05-01\n\n  from-file-1  \nfrom-file-2\n").unwrap();
        let config_path = dir.join("turnpike.toml");
        std::fs::write(
            &config_path,
            "[auth]\nsecrets = [\"inline\"]\nsecrets_file = \"secrets\"\n",
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let resolved: Vec<&str> = config.auth.resolved_secrets.iter().map(Secret::expose).collect();
        assert_eq!(resolved, ["inline", "from-file-1", "from-file-2"]);

        std::fs::write(&secrets, "# nothing yet\n").unwrap();
        let err = Config::load(&config_path).unwrap_err();
        assert_eq!(err.key(), Some("auth.secrets_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_config_file_is_an_error_naming_it() {
        let msg = Config::load(Path::new("/nonexistent/turnpike.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/turnpike.toml"), "{msg}");
    }
}
