//! Configuration: the TOML schema, its built-in defaults and its validation.
//!
//! The server reads one TOML file in which every section and every key is
//! optional; whatever is left out takes the default written on its field
//! here, and the defaults are meant to be safe on a public server. Key names
//! follow the configuration sketch in the project's design doc (DESIGN.md),
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
//!    `auth.secrets_file` into [`AuthSection::resolved_secrets`].
//!
//! [`Config::load`] and [`Config::from_toml`] do both; call `validate` on its
//! own only for a config built or changed in code.
//!
//! Secrets are held in [`Secret`], whose `Debug` is redacted, so a config can
//! be logged with `{:?}`, and no error message ever quotes a secret.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

pub use crate::proto::peer_filter::Cidr;

/// Most event-loop shards `server.workers` may ask for.
pub const MAX_WORKERS: usize = 256;

/// REALM and SOFTWARE hold fewer than 128 characters (RFC 8489 §14.9,
/// §14.14), which also keeps them under 763 bytes.
const MAX_TEXT_CHARS: usize = 127;

/// USERNAME holds fewer than 509 bytes (RFC 8489 §14.3).
const MAX_USERNAME_BYTES: usize = 508;

/// Cap on `limits.max_channels_per_allocation`: RFC 8656's channel range
/// (0x4000-0x4FFF) holds this many, far more than any real client binds
/// (the core also accepts RFC 5766's wider range, but the cap stays).
const MAX_CHANNELS: usize = 0x1000;

/// Bounds of `auth.nonce_ttl`.
const MIN_NONCE_TTL: Duration = Duration::from_secs(10);
const MAX_NONCE_TTL: Duration = Duration::from_secs(3600);

/// Smallest `limits.max_frame_size`: the datagram every IPv4 host must accept.
const MIN_FRAME_SIZE: usize = 576;

/// Lower bound of `limits.max_allocation_lifetime`.
const MIN_ALLOCATION_LIFETIME: Duration = Duration::from_secs(60);

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
    /// `[signaling]`: the WebSocket rooms, `/ice-servers` and the demo page
    /// served on `listen.http`.
    pub signaling: SignalingSection,
    /// `[log]`: log filter and format.
    pub log: LogSection,
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
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            udp: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tcp: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tls: Vec::new(),
            http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
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
    /// Age after which a nonce is answered with 438 Stale Nonce and the
    /// client retries with a fresh one. Between 10s and 1h. Default: `"10m"`.
    #[serde(with = "humantime_serde")]
    pub nonce_ttl: Duration,
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
            secrets_file: None,
            credential_ttl: Duration::from_secs(24 * 3600),
            nonce_ttl: Duration::from_secs(600),
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
    /// a congested link would. Half a second of it (at least 16 KiB) may
    /// pass in a burst. 0: no limit. A reload applies to new allocations.
    /// Default: 0. (A 720p video call needs about 300 kB/s each way.)
    pub allocation_bytes_per_second: u64,
    /// Bytes a second all allocations of one username may relay together,
    /// across all shards, with the same burst rule. 0: no limit. A reload
    /// applies to users with no allocation yet. Default: 0.
    pub user_bytes_per_second: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_allocations: 10_000,
            max_allocations_per_user: 20,
            max_allocation_lifetime: Duration::from_secs(3600),
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            max_connections: 4096,
            connection_setup_timeout: Duration::from_secs(10),
            connection_idle_timeout: Duration::from_secs(120),
            max_frame_size: 16_384,
            allocation_bytes_per_second: 0,
            user_bytes_per_second: 0,
        }
    }
}

/// `[signaling]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingSection {
    /// Serve `listen.http` over TLS (HTTPS, WSS) with the `[tls]`
    /// certificate, which browsers need for getUserMedia anywhere but on
    /// localhost. Needs `tls.cert` and `tls.key`. Default: `false`.
    pub tls: bool,
    /// Most peers in one room; a join beyond gets `room-full`. Every peer
    /// connects to every other (full mesh), so each uploads its media
    /// `room_size - 1` times. From 2 to 64. Default: 6.
    pub room_size: usize,
    /// Most rooms at once; a join that would open one more gets
    /// `room-full`. At least 1. Default: 1000.
    pub max_rooms: usize,
    /// Most HTTP connections open at once, WebSockets included; one beyond
    /// is closed as soon as it is accepted. At least 1. Default: 1000.
    pub max_connections: usize,
    /// Largest client message, in bytes; a bigger one is answered with
    /// `too-large` and dropped (the socket stays). A message over four times
    /// this closes the socket (WebSocket close 1009). From 1024 to 1048576.
    /// Default: 65536.
    pub max_message_size: usize,
    /// Messages per second a client may send, averaged; bursts of twice as
    /// many pass. Beyond, messages are answered with `rate-limited` and
    /// dropped. At least 1. Default: 50.
    pub messages_per_second: u32,
    /// Interval of the server's WebSocket pings. At least 1s. Default:
    /// `"15s"`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client from which nothing (not even a pong) arrives for this long
    /// is dropped, and its room sees `peer-left`. At least `ping_interval`.
    /// Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// Secret that gates `/ws`: a client must then connect with
    /// `?token=<expiry>.<signature>`, where expiry is a Unix time and the
    /// signature is base64url (no padding) of HMAC-SHA256(secret, expiry);
    /// `turnpike token` mints one. Without it anyone who reaches
    /// `listen.http` may join rooms, and so get TURN credentials (warned
    /// at start when `listen.http` is not loopback). Default: unset.
    pub token_secret: Option<Secret>,
    /// Key an application backend presents as `Authorization: Bearer
    /// <key>` to `GET /ice-servers`; unset, that endpoint does not exist
    /// (404). Default: unset.
    pub api_key: Option<Secret>,
    /// Origins (`"https://app.example.org"`) whose pages may open `/ws`
    /// and read `/ice-servers` (CORS); a WebSocket upgrade from another
    /// origin gets 403. Empty allows every origin. Default: `[]`.
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
            room_size: 6,
            max_rooms: 1000,
            max_connections: 1000,
            max_message_size: 65_536,
            messages_per_second: 50,
            ping_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(30),
            token_secret: None,
            api_key: None,
            allowed_origins: Vec::new(),
            turn_host: None,
        }
    }
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

/// A secret string (shared secret, password, precomputed key).
///
/// Its `Debug` prints `Secret(<redacted>)` so secrets never reach logs, and
/// it has no `Display` or `PartialEq`: read it with [`expose`](Self::expose)
/// and compare in constant time.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret, e.g. one generated at start.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An inclusive range of ports, written `"LOW-HIGH"` (e.g. `"49152-65535"`).
///
/// [`PortRange::new`] and parsing guarantee 1 <= `low` <= `high`; the
/// fields are public, so [`Config::validate`] checks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub low: u16,
    /// Last port of the range (included).
    pub high: u16,
}

/// Why a port range is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not two port numbers joined by `-`.
    #[error("expected \"LOW-HIGH\" with ports from 1 to 65535, e.g. \"49152-65535\"")]
    Syntax,
    /// Port 0 means "any port" to the OS and cannot be relayed from.
    #[error("low port 0 is not allowed")]
    ZeroPort,
    /// The range is upside down.
    #[error("low port {low} is above high port {high}")]
    Reversed {
        /// The `LOW` given.
        low: u16,
        /// The `HIGH` given.
        high: u16,
    },
}

impl PortRange {
    /// A range from `low` to `high`, both included; 1 <= `low` <= `high`.
    pub fn new(low: u16, high: u16) -> Result<Self, PortRangeError> {
        if low == 0 {
            Err(PortRangeError::ZeroPort)
        } else if low > high {
            Err(PortRangeError::Reversed { low, high })
        } else {
            Ok(PortRange { low, high })
        }
    }

    /// Number of ports in the range (0 if `low > high`).
    pub fn len(&self) -> u32 {
        if self.low > self.high {
            0
        } else {
            u32::from(self.high) - u32::from(self.low) + 1
        }
    }

    /// True if the range holds no port (only possible when built by hand
    /// with `low > high`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.low <= port && port <= self.high
    }

    /// The range as `low..=high`, to iterate over.
    pub fn as_range(&self) -> RangeInclusive<u16> {
        self.low..=self.high
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (low, high) = s.split_once('-').ok_or(PortRangeError::Syntax)?;
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| PortRangeError::Syntax);
        PortRange::new(port(low)?, port(high)?)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| D::Error::custom(format_args!("relay.ports: invalid port range {text:?}: {e}")))
    }
}

/// `deserialize_with` helper: an IPv6 address, or `"off"`.
fn ipv6_or_off<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Ipv6Addr>, D::Error> {
    parse_or_off(deserializer, |text| {
        format!("relay.ipv6: {text:?} is neither an IPv6 address nor \"off\"")
    })
}

/// `deserialize_with` helper: a socket address, or `"off"`.
fn addr_or_off<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_or_off(deserializer, |text| {
        format!("{text:?} is neither an address like \"127.0.0.1:8080\" nor \"off\"")
    })
}

/// A string that is `"off"` (`None`) or parses as `T`; `error` words the
/// refusal of anything else.
fn parse_or_off<'de, D: Deserializer<'de>, T: FromStr>(
    deserializer: D,
    error: impl Fn(&str) -> String,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| D::Error::custom(error(&text)))
}

/// `deserialize_with` helper: a list of CIDR strings.
fn cidrs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Cidr>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            text.parse::<Cidr>().map_err(|e| {
                // toml points at the whole list, so the message must name the
                // element; the peer filter's errors quote it in most cases.
                let quoted = format!("{text:?}");
                let message = e.to_string();
                if message.contains(&quoted) {
                    D::Error::custom(message)
                } else {
                    D::Error::custom(format_args!("invalid network {quoted}: {message}"))
                }
            })
        })
        .collect()
}

/// Why a configuration is refused. Every message names the file (when there
/// is one) and the key or line at fault, and never quotes a secret.
///
/// Messages are complete on their own (`{}` is enough); the underlying
/// I/O or TOML error is part of the message rather than a `source()`, so
/// `{:#}` through anyhow does not print it twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// TOML syntax error, unknown key, wrong type or malformed value. toml's
    /// message gives the line, the column and a snippet.
    #[error("{origin}: {}", .error.to_string().trim_end())]
    Parse {
        /// The file path, or `<string>`-like label given to [`Config::from_toml`].
        origin: String,
        /// toml's error.
        error: Box<toml::de::Error>,
    },
    /// A value that parses but is not allowed.
    #[error("{}{key}: {reason}", Origin(.origin))]
    Invalid {
        /// Where the config came from; `None` from a bare [`Config::validate`].
        origin: Option<String>,
        /// The key at fault, e.g. `relay.ports` or `auth.users[0].key`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `auth.secrets_file` could not be read.
    #[error("{}auth.secrets_file: cannot read {}: {error}", Origin(.origin), .path.display())]
    SecretsFile {
        /// Where the config came from; `None` from a bare [`Config::validate`].
        origin: Option<String>,
        /// The secrets file, as resolved.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}

impl ConfigError {
    /// The key at fault, for [`ConfigError::Invalid`] and
    /// [`ConfigError::SecretsFile`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::SecretsFile { .. } => Some("auth.secrets_file"),
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }

    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: None,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Names the file a validation error was found in.
    fn in_origin(mut self, name: &str) -> Self {
        if let ConfigError::Invalid { origin, .. } | ConfigError::SecretsFile { origin, .. } = &mut self {
            if origin.is_none() {
                *origin = Some(name.to_owned());
            }
        }
        self
    }
}

/// Displays `"<origin>: "`, or nothing.
struct Origin<'a>(&'a Option<String>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(origin) => write!(f, "{origin}: "),
            None => Ok(()),
        }
    }
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
            for file in [&mut config.auth.secrets_file, &mut config.tls.cert, &mut config.tls.key]
                .into_iter()
                .flatten()
            {
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

    /// Checks everything serde cannot, and fills
    /// [`AuthSection::resolved_secrets`] from `auth.secrets` and
    /// `auth.secrets_file` (read here; a missing or unreadable file is an
    /// error naming it). On error the config is left unchanged.
    ///
    /// Checks: `server.realm` and `server.software` lengths (and realm
    /// non-empty), `server.external_ip` and `relay.ipv4` usable,
    /// `server.workers` <= 256, `listen.udp` non-empty without duplicates,
    /// `relay.ports` (1 <= LOW <= HIGH, at least 2 ports), every user (name
    /// non-empty and unique, exactly one of `password` / `key`, `key` 32 hex
    /// digits), secrets non-empty, `auth.credential_ttl` >= 1s,
    /// `auth.nonce_ttl` in 10s..=1h, limits >= 1 with
    /// `limits.max_allocation_lifetime` >= 60s, `log.level` a valid filter.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.check_server()?;
        self.check_listen()?;
        self.check_relay()?;
        self.check_auth()?;
        self.check_limits()?;
        self.check_signaling()?;
        self.check_log()?;
        self.auth.resolved_secrets = self.read_secrets()?;
        Ok(())
    }

    /// Settings that are valid but probably not what a public server wants;
    /// logged at start and printed by `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(http) = self.listen.http {
            if !http.ip().is_loopback() && self.signaling.token_secret.is_none() {
                warnings.push(format!(
                    "listen.http {http} is not loopback and signaling.token_secret is unset: \
                     anyone who reaches it can join rooms and get TURN credentials"
                ));
            }
        }
        warnings
    }

    /// The 16-byte long-term credential key of `user` (RFC 8489 §9.2.2):
    /// MD5(name:realm:password) with `server.realm`, or the decoded `key`.
    ///
    /// Meant for a validated config. A user that [`validate`](Self::validate)
    /// would refuse (no password and no key, both, or a malformed key) gets
    /// a random key nobody can match, so it fails closed; use
    /// [`try_user_key`](Self::try_user_key) to tell that case apart.
    pub fn user_key(&self, user: &User) -> [u8; 16] {
        self.try_user_key(user)
            .unwrap_or_else(|| unusable_key(&self.server.realm, user))
    }

    /// Like [`user_key`](Self::user_key), but `None` for a user without
    /// exactly one usable credential.
    pub fn try_user_key(&self, user: &User) -> Option<[u8; 16]> {
        match (&user.password, &user.key) {
            (Some(password), None) => Some(md5_key(&user.name, &self.server.realm, password.expose().as_bytes())),
            (None, Some(key)) => decode_key(key.expose()),
            _ => None,
        }
    }

    fn check_server(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.realm.is_empty() {
            return Err(ConfigError::invalid(
                "server.realm",
                "is empty; long-term credentials need a realm",
            ));
        }
        check_text("server.realm", &server.realm)?;
        check_text("server.software", &server.software)?;
        if let Some(ip) = server.external_ip {
            let reason = match ip {
                IpAddr::V6(_) => Some(
                    "must be an IPv4 address: relays are IPv4 only, and clients would \
                     be sent an address of the wrong family",
                ),
                ip if ip.is_unspecified() => Some("must be a real address, not unspecified"),
                ip if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) => Some("must be a unicast address"),
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(ConfigError::invalid("server.external_ip", format!("{ip} {reason}")));
            }
        }
        if server.shutdown_grace > Duration::from_secs(3600) {
            return Err(ConfigError::invalid("server.shutdown_grace", "must be at most 1h"));
        }
        if server.workers > MAX_WORKERS {
            return Err(ConfigError::invalid(
                "server.workers",
                format!(
                    "{} is more than {MAX_WORKERS}; 0 means one per CPU core",
                    server.workers
                ),
            ));
        }
        Ok(())
    }

    fn check_listen(&self) -> Result<(), ConfigError> {
        let listen = &self.listen;
        if listen.udp.is_empty() && listen.tcp.is_empty() && listen.tls.is_empty() {
            return Err(ConfigError::invalid(
                "listen",
                "udp, tcp and tls are all empty: nothing to serve",
            ));
        }
        if !listen.tls.is_empty() && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(ConfigError::invalid(
                "listen.tls",
                "needs a certificate and key: set tls.cert and tls.key",
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

    fn check_relay(&self) -> Result<(), ConfigError> {
        let relay = &self.relay;
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

    fn check_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        for (i, secret) in auth.secrets.iter().enumerate() {
            if secret.expose().trim().is_empty() {
                return Err(ConfigError::invalid(format!("auth.secrets[{i}]"), "is empty"));
            }
        }
        if auth.credential_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "auth.credential_ttl",
                format!(
                    "{} is too short; it must be at least 1s",
                    humantime::format_duration(auth.credential_ttl)
                ),
            ));
        }
        if auth.nonce_ttl < MIN_NONCE_TTL || auth.nonce_ttl > MAX_NONCE_TTL {
            return Err(ConfigError::invalid(
                "auth.nonce_ttl",
                format!(
                    "{} is out of range; it must be between 10s and 1h",
                    humantime::format_duration(auth.nonce_ttl)
                ),
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, user) in auth.users.iter().enumerate() {
            check_user(i, user)?;
            if let Some(first) = seen.insert(&user.name, i) {
                return Err(ConfigError::invalid(
                    format!("auth.users[{i}].name"),
                    format!("user {:?} is already defined by auth.users[{first}]", user.name),
                ));
            }
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let counts = [
            ("limits.max_allocations", limits.max_allocations),
            ("limits.max_allocations_per_user", limits.max_allocations_per_user),
            (
                "limits.max_permissions_per_allocation",
                limits.max_permissions_per_allocation,
            ),
            ("limits.max_channels_per_allocation", limits.max_channels_per_allocation),
            ("limits.max_connections", limits.max_connections),
        ];
        for (key, value) in counts {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if limits.max_channels_per_allocation > MAX_CHANNELS {
            return Err(ConfigError::invalid(
                "limits.max_channels_per_allocation",
                format!(
                    "{} is more than the cap of {MAX_CHANNELS}",
                    limits.max_channels_per_allocation
                ),
            ));
        }
        if !(MIN_FRAME_SIZE..=crate::proto::stream_framing::MAX_FRAME).contains(&limits.max_frame_size) {
            return Err(ConfigError::invalid(
                "limits.max_frame_size",
                format!(
                    "{} is outside {MIN_FRAME_SIZE}..={}",
                    limits.max_frame_size,
                    crate::proto::stream_framing::MAX_FRAME
                ),
            ));
        }
        let durations = [
            (
                "limits.connection_setup_timeout",
                limits.connection_setup_timeout,
                Duration::from_secs(300),
            ),
            (
                "limits.connection_idle_timeout",
                limits.connection_idle_timeout,
                Duration::MAX,
            ),
        ];
        for (key, value, max) in durations {
            if value < Duration::from_secs(1) || value > max {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is out of range", humantime::format_duration(value)),
                ));
            }
        }
        let lifetime = limits.max_allocation_lifetime;
        if lifetime < MIN_ALLOCATION_LIFETIME {
            return Err(ConfigError::invalid(
                "limits.max_allocation_lifetime",
                format!(
                    "{} is too short; it must be at least 60s",
                    humantime::format_duration(lifetime)
                ),
            ));
        }
        // LIFETIME is a 32-bit count of seconds on the wire.
        if lifetime.as_secs() > u64::from(u32::MAX) {
            return Err(ConfigError::invalid(
                "limits.max_allocation_lifetime",
                format!(
                    "{} is longer than LIFETIME can carry ({} s)",
                    humantime::format_duration(lifetime),
                    u32::MAX
                ),
            ));
        }
        Ok(())
    }

    fn check_signaling(&self) -> Result<(), ConfigError> {
        let signaling = &self.signaling;
        if signaling.tls && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(ConfigError::invalid(
                "signaling.tls",
                "needs a certificate and key: set tls.cert and tls.key",
            ));
        }
        let ranges = [
            ("signaling.room_size", signaling.room_size, 2, 64),
            ("signaling.max_rooms", signaling.max_rooms, 1, usize::MAX),
            ("signaling.max_connections", signaling.max_connections, 1, usize::MAX),
            ("signaling.max_message_size", signaling.max_message_size, 1024, 1 << 20),
            (
                "signaling.messages_per_second",
                signaling.messages_per_second as usize,
                1,
                usize::MAX,
            ),
        ];
        for (key, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(ConfigError::invalid(key, format!("{value} is outside {low}..={high}")));
            }
        }
        if signaling.ping_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid("signaling.ping_interval", "must be at least 1s"));
        }
        if signaling.heartbeat_timeout < signaling.ping_interval {
            return Err(ConfigError::invalid(
                "signaling.heartbeat_timeout",
                "must be at least signaling.ping_interval",
            ));
        }
        let secrets = [
            ("signaling.token_secret", &signaling.token_secret),
            ("signaling.api_key", &signaling.api_key),
        ];
        for (key, secret) in secrets {
            if secret.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
                return Err(ConfigError::invalid(key, "is empty"));
            }
        }
        for (i, origin) in signaling.allowed_origins.iter().enumerate() {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                return Err(ConfigError::invalid(
                    format!("signaling.allowed_origins[{i}]"),
                    format!("{origin:?} is not an origin like \"https://app.example.org\""),
                ));
            }
        }
        if let Some(host) = &signaling.turn_host {
            if !is_valid_host(host) {
                return Err(ConfigError::invalid(
                    "signaling.turn_host",
                    format!("{host:?} is not a host name or IP address"),
                ));
            }
        }
        Ok(())
    }

    fn check_log(&self) -> Result<(), ConfigError> {
        let level = &self.log.level;
        if level.trim().is_empty() {
            return Err(ConfigError::invalid(
                "log.level",
                "is empty; use \"off\" to silence logging",
            ));
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map_err(|e| ConfigError::invalid("log.level", format!("{level:?} is not a valid filter: {e}")))?;
        Ok(())
    }

    /// `auth.secrets` followed by the secrets in `auth.secrets_file`.
    fn read_secrets(&self) -> Result<Vec<Secret>, ConfigError> {
        let mut secrets = self.auth.secrets.clone();
        if let Some(path) = &self.auth.secrets_file {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::SecretsFile {
                origin: None,
                path: path.clone(),
                error,
            })?;
            let before = secrets.len();
            secrets.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(Secret::new),
            );
            if secrets.len() == before {
                return Err(ConfigError::invalid(
                    "auth.secrets_file",
                    format!("{} holds no secret", path.display()),
                ));
            }
        }
        Ok(secrets)
    }
}

/// True for a DNS name (letters, digits, `-` and `.`), an IPv4 address or
/// an IPv6 address, which is what may go into a STUN/TURN URL (RFC 7064,
/// RFC 7065) as its host.
pub fn is_valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// REALM / SOFTWARE: fewer than 128 characters, none of them control characters.
fn check_text(key: &str, value: &str) -> Result<(), ConfigError> {
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ConfigError::invalid(
            key,
            format!("is {chars} characters long; STUN allows fewer than 128"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(key, "contains a control character"));
    }
    Ok(())
}

fn check_user(i: usize, user: &User) -> Result<(), ConfigError> {
    let name = &user.name;
    if name.is_empty() {
        return Err(ConfigError::invalid(format!("auth.users[{i}].name"), "is empty"));
    }
    if name.len() > MAX_USERNAME_BYTES {
        return Err(ConfigError::invalid(
            format!("auth.users[{i}].name"),
            format!("is {} bytes long; USERNAME allows fewer than 509", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            format!("auth.users[{i}].name"),
            "contains a control character",
        ));
    }
    match (&user.password, &user.key) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            format!("auth.users[{i}]"),
            format!("user {name:?} sets both password and key; set exactly one"),
        )),
        (None, None) => Err(ConfigError::invalid(
            format!("auth.users[{i}]"),
            format!("user {name:?} has neither password nor key; set exactly one"),
        )),
        (Some(password), None) if password.expose().is_empty() => Err(ConfigError::invalid(
            format!("auth.users[{i}].password"),
            format!("user {name:?} has an empty password"),
        )),
        (None, Some(key)) if decode_key(key.expose()).is_none() => Err(ConfigError::invalid(
            format!("auth.users[{i}].key"),
            format!(
                "user {name:?}: the key must be 32 hex digits, MD5(name:realm:password) \
                 as `turnadmin -k` prints it"
            ),
        )),
        _ => Ok(()),
    }
}

/// MD5(name:realm:password), the long-term credential key (RFC 8489 §9.2.2).
fn md5_key(name: &str, realm: &str, password: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut hash = Md5::new();
    hash.update(name.as_bytes());
    hash.update(b":");
    hash.update(realm.as_bytes());
    hash.update(b":");
    hash.update(password);
    hash.finalize().into()
}

/// Decodes exactly 32 hex digits (either case) into 16 bytes.
fn decode_key(hex: &str) -> Option<[u8; 16]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let digits: &[u8; 32] = hex.as_bytes().try_into().ok()?;
    let mut key = [0u8; 16];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        if let [hi, lo] = pair {
            *byte = nibble(*hi)? << 4 | nibble(*lo)?;
        }
    }
    Some(key)
}

/// A key for a user without a usable credential: random, so that no client
/// can compute it. Should the system RNG fail, a hash that at least differs
/// from every password-derived key stands in.
fn unusable_key(realm: &str, user: &User) -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
        let mut material = b"\0turnpike: no usable credential\0".to_vec();
        for secret in [&user.key, &user.password].into_iter().flatten() {
            material.extend_from_slice(secret.expose().as_bytes());
        }
        key = md5_key(&user.name, realm, &material);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config.example.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml")
    }

    fn invalid_key(text: &str) -> String {
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
            "credential_ttl",
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
            "max_allocation_lifetime",
            "max_permissions_per_allocation",
            "max_channels_per_allocation",
            "allocation_bytes_per_second",
            "user_bytes_per_second",
            "http",
            "[signaling]",
            "room_size",
            "max_rooms",
            "max_message_size",
            "messages_per_second",
            "ping_interval",
            "heartbeat_timeout",
            "token_secret",
            "api_key",
            "allowed_origins",
            "turn_host",
            "[log]",
            "level",
            "format",
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
    fn bad_port_ranges_are_refused() {
        for (text, expected) in [
            ("0-100", PortRangeError::ZeroPort),
            ("200-100", PortRangeError::Reversed { low: 200, high: 100 }),
            ("49152", PortRangeError::Syntax),
            ("1-70000", PortRangeError::Syntax),
            ("a-b", PortRangeError::Syntax),
            ("", PortRangeError::Syntax),
        ] {
            assert_eq!(text.parse::<PortRange>(), Err(expected), "{text:?}");
        }
        let msg = parse("[relay]\nports = \"0-100\"\n").unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("low port 0 is not allowed"), "{msg}");
        assert_eq!(invalid_key("[relay]\nports = \"5000-5000\"\n"), "relay.ports");
    }

    #[test]
    fn hand_built_port_range_is_checked_by_validate() {
        let mut config = Config::default();
        config.relay.ports = PortRange { low: 0, high: 10 };
        let msg = config.validate().unwrap_err().to_string();
        assert_eq!(msg, "relay.ports: low port 0 is not allowed");
    }

    #[test]
    fn port_range_helpers() {
        let range: PortRange = "49152-65535".parse().unwrap();
        assert_eq!(range.len(), 16384);
        assert!(range.contains(49152) && range.contains(65535));
        assert!(!range.contains(49151));
        assert_eq!(range.as_range().count(), 16384);
        assert_eq!(range.to_string(), "49152-65535");
        assert_eq!(PortRange::new(1, 65535).unwrap().len(), 65535);
        assert!(PortRange { low: 5, high: 4 }.is_empty());
    }

    #[test]
    fn user_with_both_password_and_key_is_refused() {
        let err = parse(
            "[[auth.users]]\nname = \"alice\"\npassword = \"pw\"\n\
             key = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.key(), Some("auth.users[0]"));
        assert!(msg.starts_with("test.toml: auth.users[0]: "), "{msg}");
        assert!(msg.contains("both"), "{msg}");
        assert!(!msg.contains("0123456789abcdef"), "{msg}");
    }

    #[test]
    fn user_without_credential_is_refused() {
        assert_eq!(invalid_key("[[auth.users]]\nname = \"alice\"\n"), "auth.users[0]");
    }

    #[test]
    fn bad_hex_key_is_refused_without_echoing_it() {
        for key in [
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "",
        ] {
            let text = format!("[[auth.users]]\nname = \"bob\"\nkey = \"{key}\"\n");
            let err = parse(&text).unwrap_err();
            assert_eq!(err.key(), Some("auth.users[0].key"), "{key:?}");
            if !key.is_empty() {
                assert!(!err.to_string().contains(key), "{err}");
            }
        }
    }

    #[test]
    fn user_names_must_be_unique_and_non_empty() {
        let text = "[[auth.users]]\nname = \"a\"\npassword = \"x\"\n\
                    [[auth.users]]\nname = \"a\"\npassword = \"y\"\n";
        assert_eq!(invalid_key(text), "auth.users[1].name");
        assert_eq!(invalid_key("[[auth.users]]\npassword = \"x\"\n"), "auth.users[0].name");
    }

    #[test]
    fn user_key_is_md5_of_name_realm_password() {
        let mut config = Config::default();
        config.server.realm = "realm".to_owned();
        let user = User {
            name: "user".to_owned(),
            password: Some(Secret::new("pass")),
            key: None,
        };
        // printf 'user:realm:pass' | md5sum
        let expected = decode_key("8493fbc53ba582fb4c044c456bdc40eb").unwrap();
        assert_eq!(config.user_key(&user), expected);
        let by_key = User {
            name: "user".to_owned(),
            password: None,
            key: Some(Secret::new("8493FBC53BA582FB4C044C456BDC40EB")),
        };
        assert_eq!(config.user_key(&by_key), expected);
    }

    #[test]
    fn user_without_usable_credential_gets_an_unguessable_key() {
        let config = Config::default();
        let user = User {
            name: "user".to_owned(),
            password: None,
            key: None,
        };
        assert_eq!(config.try_user_key(&user), None);
        // Not the key of an empty password.
        assert_ne!(config.user_key(&user), md5_key("user", &config.server.realm, b""));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        let config = parse("[auth]\nsecrets = [\"hunter2\"]\n[[auth.users]]\nname = \"a\"\npassword = \"hunter2\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(invalid_key("[auth]\nsecrets = [\"ok\", \"\"]\n"), "auth.secrets[1]");
    }

    #[test]
    fn nonce_ttl_must_be_between_10s_and_1h() {
        assert_eq!(invalid_key("[auth]\nnonce_ttl = \"5s\"\n"), "auth.nonce_ttl");
        assert_eq!(invalid_key("[auth]\nnonce_ttl = \"2h\"\n"), "auth.nonce_ttl");
        assert!(parse("[auth]\nnonce_ttl = \"10s\"\n").is_ok());
        assert!(parse("[auth]\nnonce_ttl = \"1h\"\n").is_ok());
    }

    #[test]
    fn limits_must_be_positive() {
        assert_eq!(invalid_key("[limits]\nmax_allocations = 0\n"), "limits.max_allocations");
        assert_eq!(
            invalid_key("[limits]\nmax_channels_per_allocation = 5000\n"),
            "limits.max_channels_per_allocation"
        );
        assert_eq!(
            invalid_key("[limits]\nmax_allocation_lifetime = \"59s\"\n"),
            "limits.max_allocation_lifetime"
        );
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
    fn server_values_are_checked() {
        assert_eq!(invalid_key("[server]\nrealm = \"\"\n"), "server.realm");
        let long = "x".repeat(128);
        assert_eq!(
            invalid_key(&format!("[server]\nsoftware = \"{long}\"\n")),
            "server.software"
        );
        assert_eq!(invalid_key("[server]\nworkers = 257\n"), "server.workers");
        assert_eq!(
            invalid_key("[server]\nexternal_ip = \"0.0.0.0\"\n"),
            "server.external_ip"
        );
        assert_eq!(
            invalid_key("[server]\nexternal_ip = \"2001:db8::1\"\n"),
            "server.external_ip"
        );
    }

    #[test]
    fn bad_cidr_is_reported_with_its_line() {
        let msg = parse("[peers]\n\nallow = [\"10.0.0.0/99\"]\n").unwrap_err().to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("10.0.0.0/99"), "{msg}");
    }

    #[test]
    fn bad_log_settings_are_refused() {
        assert_eq!(invalid_key("[log]\nlevel = \"\"\n"), "log.level");
        assert_eq!(invalid_key("[log]\nlevel = \"info,[\"\n"), "log.level");
        let msg = parse("[log]\nformat = \"xml\"\n").unwrap_err().to_string();
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
    fn missing_secrets_file_is_an_error_naming_it() {
        let err = parse("[auth]\nsecrets_file = \"/nonexistent/turnpike/secrets\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::SecretsFile { .. }), "{msg}");
        assert!(msg.starts_with("test.toml: auth.secrets_file: "), "{msg}");
        assert!(msg.contains("/nonexistent/turnpike/secrets"), "{msg}");
    }

    #[test]
    fn missing_config_file_is_an_error_naming_it() {
        let msg = Config::load(Path::new("/nonexistent/turnpike.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/turnpike.toml"), "{msg}");
    }

    #[test]
    fn failed_validation_leaves_resolved_secrets_alone() {
        let mut config = Config::default();
        config.auth.secrets = vec![Secret::new("a")];
        config.validate().unwrap();
        config.auth.secrets_file = Some(PathBuf::from("/nonexistent/turnpike/secrets"));
        assert!(config.validate().is_err());
        assert_eq!(config.auth.resolved_secrets.len(), 1);
    }

    #[test]
    fn signaling_settings_are_checked() {
        for (text, key) in [
            ("[signaling]\nroom_size = 1", "signaling.room_size"),
            ("[signaling]\nroom_size = 65", "signaling.room_size"),
            ("[signaling]\nmax_rooms = 0", "signaling.max_rooms"),
            ("[signaling]\nmax_message_size = 100", "signaling.max_message_size"),
            ("[signaling]\nmessages_per_second = 0", "signaling.messages_per_second"),
            ("[signaling]\nping_interval = \"10ms\"", "signaling.ping_interval"),
            (
                "[signaling]\nping_interval = \"20s\"\nheartbeat_timeout = \"10s\"",
                "signaling.heartbeat_timeout",
            ),
            ("[signaling]\ntoken_secret = \" \"", "signaling.token_secret"),
            ("[signaling]\napi_key = \"\"", "signaling.api_key"),
            (
                "[signaling]\nallowed_origins = [\"app.example\"]",
                "signaling.allowed_origins[0]",
            ),
            (
                "[signaling]\nallowed_origins = [\"https://a.example/\"]",
                "signaling.allowed_origins[0]",
            ),
            ("[signaling]\nturn_host = \"a b\"", "signaling.turn_host"),
            ("[signaling]\ntls = true", "signaling.tls"),
        ] {
            assert_eq!(invalid_key(text), key, "{text}");
        }
        let config = parse("[listen]\nhttp = \"off\"\n[signaling]\nturn_host = \"turn.example.org\"").unwrap();
        assert_eq!(config.listen.http, None);
        let error = parse("[listen]\nhttp = \"localhost\"").unwrap_err().to_string();
        assert!(error.contains("neither an address"), "{error}");
    }

    #[test]
    fn hosts_for_urls() {
        for good in ["turn.example.org", "localhost", "a-b.c", "192.0.2.1", "2001:db8::1"] {
            assert!(is_valid_host(good), "{good}");
        }
        for bad in ["", "a b", "-a.b", "a..b", "a/b", "[::1]", "é.example", "a.b:80"] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }
}
