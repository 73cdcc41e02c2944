//! Step 2 of loading: [`Config::validate`] and the rules it enforces, with
//! what follows from those rules: the long-term key of each user
//! ([`Config::user_key`]) and the start-up [`Config::warnings`].
//!
//! Contract: `validate` reports the first broken rule as a [`ConfigError`]
//! naming its key (the loader adds the file), never quoting a secret, and
//! changes the config only once every rule holds (it then fills
//! `auth.resolved_secrets`). User keys live here because they follow the
//! credential rules of `check_user`: a user those rules would refuse gets a
//! key nobody can match.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::{Config, ConfigError, PortRange, Secret, User};
use crate::proto::auth;

/// Most event-loop shards `server.workers` may ask for.
pub const MAX_WORKERS: usize = 256;

/// REALM and SOFTWARE hold fewer than 128 characters (RFC 8489 §14.9,
/// §14.14), which also keeps them under 763 bytes.
const MAX_TEXT_CHARS: usize = 127;
/// The longest realm with which a 401 stays within twice the smallest
/// Allocate (28 bytes, no FINGERPRINT): 20 header + 8 ERROR-CODE + 12
/// NONCE + 4 + 12 REALM = 56.
const REFLECTION_SAFE_REALM: usize = 12;

/// USERNAME holds fewer than 509 bytes (RFC 8489 §14.3).
const MAX_USERNAME_BYTES: usize = 508;

/// Cap on `limits.max_channels_per_allocation`: RFC 8656's channel range
/// (0x4000-0x4FFF) holds this many, far more than any real client binds
/// (the core also accepts RFC 5766's wider range, but the cap stays).
const MAX_CHANNELS: usize = 0x1000;

/// Caps on the RFC 6062 peer connection limits: far beyond any real
/// client (a TCP allocation connects to a handful of peers) or the file
/// descriptors one process gets, so a typo cannot mean "unlimited".
const MAX_PEER_CONNECTIONS_PER_ALLOCATION: usize = 1024;
const MAX_PEER_CONNECTIONS: usize = 1 << 20;

/// Most `auth.nonce_keys` (each is tried on every nonce check).
const MAX_NONCE_KEYS: usize = 4;
/// Shortest `auth.nonce_keys` entry.
const MIN_NONCE_KEY_CHARS: usize = 16;
/// Bounds of `auth.nonce_ttl`.
const MIN_NONCE_TTL: Duration = Duration::from_secs(10);
const MAX_NONCE_TTL: Duration = Duration::from_secs(3600);
/// Upper bound of `auth.max_credential_lifetime`: 10 years.
const MAX_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Smallest `limits.max_frame_size`: the datagram every IPv4 host must accept.
const MIN_FRAME_SIZE: usize = 576;

/// Upper bound of the signaling counts (connections, rooms, and their
/// per-source shares): far above what one HTTP thread serves, and far
/// below what would overflow a count or tokio's semaphore (`usize::MAX >>
/// 3` permits), so no value that passes can panic at start.
const MAX_SIGNALING_COUNT: usize = 1 << 20;

/// Bounds of `signaling.max_outbox_bytes`: at least enough for a joined
/// answer with a full room, at most what a few hundred stuck sessions
/// could make into gigabytes.
const MIN_OUTBOX_BYTES: usize = 1 << 16;
const MAX_OUTBOX_BYTES: usize = 1 << 26;

/// Shortest `admin.key`: a bearer token must not be guessable.
pub const MIN_ADMIN_KEY: usize = 24;
/// Longest `fleet.instance_id` and `fleet.key_prefix`.
const MAX_FLEET_NAME: usize = 64;
const MAX_FLEET_PREFIX: usize = 32;
/// Bounds of `fleet.membership_ttl`: its third, the refresh, is at least a
/// second; at most, a dead instance's peers linger five minutes.
const MIN_MEMBERSHIP_TTL: Duration = Duration::from_secs(3);
const MAX_MEMBERSHIP_TTL: Duration = Duration::from_secs(300);

/// Lower bound of `limits.max_allocation_lifetime`.
const MIN_ALLOCATION_LIFETIME: Duration = Duration::from_secs(60);

impl Config {
    /// Checks everything serde cannot, and fills
    /// [`AuthSection::resolved_secrets`](super::AuthSection::resolved_secrets) from `auth.secrets` and
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
    /// `limits.max_allocation_lifetime` >= 60s, `log.level` a valid filter,
    /// `admin.listen` loopback with a key of at least 24 characters (read
    /// from `admin.key_file` into `admin.resolved_key`),
    /// and no count, rate or duration so large that arithmetic on it could
    /// wrap or panic ([`Config::check_magnitudes`]).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.check_server()?;
        self.check_listen()?;
        self.check_relay()?;
        self.check_auth()?;
        self.check_limits()?;
        self.check_alternate()?;
        self.check_signaling()?;
        self.check_log()?;
        self.check_fleet()?;
        self.check_magnitudes()?;
        let admin_key = self.admin_key()?;
        self.auth.resolved_secrets = self.read_secrets()?;
        self.admin.resolved_key = admin_key;
        Ok(())
    }

    /// Settings that are valid but probably not what a public server wants;
    /// logged at start and printed by `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let shared = self.listen.tls.iter().filter(|_| self.signaling.share_tls_port);
        for (key, addr) in self
            .listen
            .http
            .iter()
            .map(|a| ("listen.http", a))
            .chain(shared.map(|a| ("listen.tls", a)))
        {
            if !addr.ip().is_loopback() && self.signaling.token_secret.is_none() {
                warnings.push(format!(
                    "{key} {addr} serves signaling, is not loopback and signaling.token_secret is unset: \
                     anyone who reaches it can join rooms and get TURN credentials"
                ));
            }
        }
        // Before validation only the inline secrets are known.
        let secrets = match self.auth.resolved_secrets.is_empty() {
            true => &self.auth.secrets,
            false => &self.auth.resolved_secrets,
        };
        let short = secrets.iter().filter(|s| s.expose().len() < 16).count();
        if short > 0 {
            warnings.push(format!(
                "{short} of auth.secrets shorter than 16 characters: a guessable shared secret mints \
                 credentials for anyone; generate one, e.g. `openssl rand -base64 32`"
            ));
        }
        let secret_files = [
            ("auth.secrets_file", &self.auth.secrets_file),
            ("tls.key", &self.tls.key),
            ("admin.key_file", &self.admin.key_file),
        ];
        for (key, path) in secret_files {
            let Some(path) = path else { continue };
            if let Some(mode) = readable_by_others(path) {
                warnings.push(format!(
                    "{key} {} is readable by its group or by everyone (mode {mode:o}): chmod 600 it",
                    path.display()
                ));
            }
        }
        let listen = &self.listen;
        if let Some(everyone) = listen.proxy_protocol_from.iter().find(|c| c.prefix() < 8) {
            warnings.push(format!(
                "listen.proxy_protocol_from has {everyone}: every address in it may claim to be any \
                 client; list only your load balancers"
            ));
        }
        let listeners = listen
            .udp
            .iter()
            .chain(&listen.tcp)
            .chain(&listen.tls)
            .chain(&listen.http);
        for addr in listeners.filter(|a| self.relay.ports.as_range().contains(&a.port())) {
            warnings.push(format!(
                "listener {addr} is inside relay.ports {}: that port is never handed to a relay",
                self.relay.ports
            ));
        }
        if self.server.realm.len() > REFLECTION_SAFE_REALM {
            warnings.push(format!(
                "server.realm is {} bytes: above {REFLECTION_SAFE_REALM}, the 401 to the smallest Allocate \
                 is more than twice its size (see SECURITY.md, amplification)",
                self.server.realm.len()
            ));
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
            (Some(password), None) => Some(auth::long_term_key(&user.name, &self.server.realm, password.expose())),
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
            check_not_placeholder(&format!("auth.secrets[{i}]"), secret)?;
        }
        let algorithms = &auth.secret_algorithms;
        if algorithms.is_empty() {
            return Err(ConfigError::invalid(
                "auth.secret_algorithms",
                "is empty; name \"sha1\" (the default), \"sha256\" or both",
            ));
        }
        if algorithms.iter().enumerate().any(|(i, a)| algorithms[..i].contains(a)) {
            return Err(ConfigError::invalid(
                "auth.secret_algorithms",
                "names an algorithm twice",
            ));
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
        if auth.max_credential_lifetime < auth.credential_ttl || auth.max_credential_lifetime > MAX_CREDENTIAL_LIFETIME
        {
            return Err(ConfigError::invalid(
                "auth.max_credential_lifetime",
                format!(
                    "{} is out of range; it must be between auth.credential_ttl ({}) and 10 years",
                    humantime::format_duration(auth.max_credential_lifetime),
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
        if auth.nonce_keys.len() > MAX_NONCE_KEYS {
            return Err(ConfigError::invalid(
                "auth.nonce_keys",
                format!("{} keys; at most {MAX_NONCE_KEYS}", auth.nonce_keys.len()),
            ));
        }
        if let Some(i) = auth
            .nonce_keys
            .iter()
            .position(|k| k.expose().chars().count() < MIN_NONCE_KEY_CHARS)
        {
            return Err(ConfigError::invalid(
                "auth.nonce_keys",
                format!("key {i} is shorter than {MIN_NONCE_KEY_CHARS} characters: anyone could forge nonces"),
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
            ("limits.max_allocations_per_source", limits.max_allocations_per_source),
            (
                "limits.max_permissions_per_allocation",
                limits.max_permissions_per_allocation,
            ),
            ("limits.max_channels_per_allocation", limits.max_channels_per_allocation),
            ("limits.max_connections", limits.max_connections),
            ("limits.max_connections_per_source", limits.max_connections_per_source),
            (
                "limits.tls_handshakes_per_source",
                limits.tls_handshakes_per_source as usize,
            ),
        ];
        for (key, value) in counts {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        let ranges = [
            (
                "limits.max_peer_connections_per_allocation",
                limits.max_peer_connections_per_allocation,
                MAX_PEER_CONNECTIONS_PER_ALLOCATION,
            ),
            (
                "limits.max_peer_connections",
                limits.max_peer_connections,
                MAX_PEER_CONNECTIONS,
            ),
        ];
        for (key, value, max) in ranges {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::invalid(key, format!("{value} is outside 1..={max}")));
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

    /// A ceiling on every count, rate and duration, whatever its own rule:
    /// a time added to `Instant::now()` must not overflow, a count must fit
    /// what tokio's semaphores and the atomics take, and no limit is so
    /// large it is no limit. Each bound is far beyond any real deployment.
    fn check_magnitudes(&self) -> Result<(), ConfigError> {
        const MAX_COUNT: u64 = 100_000_000;
        const MAX_RATE: u64 = 1 << 40;
        const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        let (limits, signaling) = (&self.limits, &self.signaling);
        let counts = [
            ("limits.max_allocations", limits.max_allocations as u64),
            (
                "limits.max_allocations_per_user",
                limits.max_allocations_per_user as u64,
            ),
            (
                "limits.max_permissions_per_allocation",
                limits.max_permissions_per_allocation as u64,
            ),
            ("limits.max_connections", limits.max_connections as u64),
            ("signaling.max_rooms", signaling.max_rooms as u64),
            ("signaling.max_connections", signaling.max_connections as u64),
        ];
        for (key, value) in counts {
            if value > MAX_COUNT {
                return Err(ConfigError::invalid(key, format!("{value} is more than {MAX_COUNT}")));
            }
        }
        let rates = [
            ("limits.allocation_bytes_per_second", limits.allocation_bytes_per_second),
            ("limits.user_bytes_per_second", limits.user_bytes_per_second),
            ("limits.challenge_bytes_per_second", limits.challenge_bytes_per_second),
            ("limits.tls_handshakes_per_source", limits.tls_handshakes_per_source),
            (
                "signaling.messages_per_second",
                u64::from(signaling.messages_per_second),
            ),
        ];
        for (key, value) in rates {
            if value > MAX_RATE {
                return Err(ConfigError::invalid(key, format!("{value} is more than {MAX_RATE}")));
            }
        }
        let durations = [
            ("limits.connection_idle_timeout", limits.connection_idle_timeout),
            ("signaling.ping_interval", signaling.ping_interval),
            ("signaling.heartbeat_timeout", signaling.heartbeat_timeout),
        ];
        for (key, value) in durations {
            if value > MAX_DURATION {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is longer than 10 years", humantime::format_duration(value)),
                ));
            }
        }
        Ok(())
    }

    fn check_alternate(&self) -> Result<(), ConfigError> {
        let alternate = &self.alternate;
        for (i, server) in alternate.servers.iter().enumerate() {
            let ip = server.ip();
            if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) || server.port() == 0 {
                return Err(ConfigError::invalid(
                    "alternate.servers",
                    format!("{server} is not a unicast address and port a client can be sent to"),
                ));
            }
            if alternate.servers[..i].contains(server) {
                return Err(ConfigError::invalid(
                    "alternate.servers",
                    format!("{server} is listed twice"),
                ));
            }
        }
        let needs_servers = match (&alternate.domain, alternate.bytes_per_second) {
            (Some(_), _) => Some("alternate.domain"),
            (None, rate) if rate > 0 => Some("alternate.bytes_per_second"),
            _ => None,
        };
        if let Some(key) = needs_servers.filter(|_| alternate.servers.is_empty()) {
            return Err(ConfigError::invalid(key, "needs alternate.servers to send clients to"));
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

    fn check_signaling(&self) -> Result<(), ConfigError> {
        let signaling = &self.signaling;
        if signaling.tls && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(ConfigError::invalid(
                "signaling.tls",
                "needs a certificate and key: set tls.cert and tls.key",
            ));
        }
        if signaling.share_tls_port && self.listen.tls.is_empty() {
            return Err(ConfigError::invalid(
                "signaling.share_tls_port",
                "needs a TLS listener to share: set listen.tls (and tls.cert, tls.key)",
            ));
        }
        let ranges = [
            ("signaling.room_size", signaling.room_size, 2, 64),
            ("signaling.max_rooms", signaling.max_rooms, 1, MAX_SIGNALING_COUNT),
            (
                "signaling.max_rooms_per_source",
                signaling.max_rooms_per_source,
                1,
                MAX_SIGNALING_COUNT,
            ),
            (
                "signaling.max_connections",
                signaling.max_connections,
                1,
                MAX_SIGNALING_COUNT,
            ),
            (
                "signaling.max_connections_per_source",
                signaling.max_connections_per_source,
                1,
                MAX_SIGNALING_COUNT,
            ),
            ("signaling.max_message_size", signaling.max_message_size, 1024, 1 << 20),
            (
                "signaling.max_outbox_bytes",
                signaling.max_outbox_bytes,
                MIN_OUTBOX_BYTES,
                MAX_OUTBOX_BYTES,
            ),
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
        if signaling.resume_grace > Duration::from_secs(600) {
            return Err(ConfigError::invalid("signaling.resume_grace", "must be at most 10m"));
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
            if let Some(secret) = secret {
                check_not_placeholder(key, secret)?;
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

    /// `[fleet]`: a `redis://` URL, names that fit in a Redis key, and a
    /// membership lifetime whose third (the refresh) is at least a second.
    fn check_fleet(&self) -> Result<(), ConfigError> {
        let fleet = &self.fleet;
        if let Some(url) = &fleet.redis_url {
            // The reason never quotes the URL: it may hold a password.
            let rest = url.expose().strip_prefix("redis://").ok_or_else(|| {
                ConfigError::invalid(
                    "fleet.redis_url",
                    "must start with redis:// (TLS to Redis is not supported)",
                )
            })?;
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            if host.is_empty() || host.starts_with('/') || host.starts_with(':') {
                return Err(ConfigError::invalid("fleet.redis_url", "names no host"));
            }
        }
        if let Some(id) = &fleet.instance_id {
            if !super::is_fleet_name(id, MAX_FLEET_NAME) {
                return Err(ConfigError::invalid(
                    "fleet.instance_id",
                    format!("must be 1 to {MAX_FLEET_NAME} characters of A-Z, a-z, 0-9, '_', '.' and '-'"),
                ));
            }
        }
        if !super::is_fleet_name(&fleet.key_prefix, MAX_FLEET_PREFIX) {
            return Err(ConfigError::invalid(
                "fleet.key_prefix",
                format!("must be 1 to {MAX_FLEET_PREFIX} characters of A-Z, a-z, 0-9, '_', '.' and '-'"),
            ));
        }
        if !(MIN_MEMBERSHIP_TTL..=MAX_MEMBERSHIP_TTL).contains(&fleet.membership_ttl) {
            return Err(ConfigError::invalid("fleet.membership_ttl", "must be from 3s to 5m"));
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

    /// The admin API's key, from `admin.key` or `admin.key_file`: required
    /// when `admin.listen` is set, which must be loopback (the API has no
    /// TLS, see SECURITY.md).
    fn admin_key(&self) -> Result<Option<Secret>, ConfigError> {
        let admin = &self.admin;
        let key = match (&admin.key, &admin.key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "admin.key",
                    "give admin.key or admin.key_file, not both",
                ))
            }
            (Some(key), None) => Some(key.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid("admin.key_file", format!("cannot read {}: {e}", path.display()))
                })?;
                let line = text.lines().map(str::trim).find(|l| !l.is_empty());
                match line {
                    Some(line) => Some(Secret::new(line)),
                    None => {
                        return Err(ConfigError::invalid(
                            "admin.key_file",
                            format!("{} holds no key", path.display()),
                        ))
                    }
                }
            }
            (None, None) => None,
        };
        let Some(listen) = admin.listen else {
            return Ok(key);
        };
        if !listen.ip().to_canonical().is_loopback() {
            return Err(ConfigError::invalid(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address: the admin API has no TLS, reach it through SSH or a \
                     TLS-terminating proxy on this host"
                ),
            ));
        }
        let Some(key) = key else {
            return Err(ConfigError::invalid(
                "admin.key",
                "admin.listen is set: give admin.key or admin.key_file",
            ));
        };
        check_not_placeholder("admin.key", &key)?;
        if key.expose().len() < MIN_ADMIN_KEY {
            return Err(ConfigError::invalid(
                "admin.key",
                format!("is shorter than {MIN_ADMIN_KEY} characters: generate one, e.g. `openssl rand -base64 32`"),
            ));
        }
        Ok(Some(key))
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
            for secret in &secrets[before..] {
                check_not_placeholder("auth.secrets_file", secret)?;
            }
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

/// Secrets that are someone's example or a default, not a secret: a
/// server that verifies with one hands TURN access to anyone who read the
/// same documentation.
const PLACEHOLDER_SECRETS: [&str; 10] = [
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "secret",
    "password",
    "example",
    "turnpike",
    "your-secret",
];

fn check_not_placeholder(key: &str, secret: &Secret) -> Result<(), ConfigError> {
    let text = secret.expose().trim();
    match PLACEHOLDER_SECRETS.iter().any(|p| p.eq_ignore_ascii_case(text)) {
        true => Err(ConfigError::invalid(
            key,
            "is a placeholder from an example, not a secret: generate one, e.g. `openssl rand -base64 32`",
        )),
        false => Ok(()),
    }
}

/// The permission bits of `path` if its group or others may read it.
fn readable_by_others(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
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

/// Decodes exactly 32 hex digits (either case) into 16 bytes.
fn decode_key(hex: &str) -> Option<[u8; 16]> {
    let digits: &[u8; 32] = hex.as_bytes().try_into().ok()?;
    let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut key = [0u8; 16];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
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
        let mut material = String::from("\0turnpike: no usable credential\0");
        for secret in [&user.key, &user.password].into_iter().flatten() {
            material.push_str(secret.expose());
        }
        key = auth::long_term_key(&user.name, realm, &material);
    }
    key
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn hand_built_port_range_is_checked_by_validate() {
        let mut config = Config::default();
        config.relay.ports = PortRange { low: 0, high: 10 };
        let msg = config.validate().unwrap_err().to_string();
        assert_eq!(msg, "relay.ports: low port 0 is not allowed");
    }

    #[test]
    fn counts_rates_and_durations_too_large_to_compute_with_are_refused() {
        assert_eq!(
            invalid_key("[signaling]\nmax_connections = 18446744073709551615\n"),
            "signaling.max_connections"
        );
        assert_eq!(
            invalid_key("[limits]\nconnection_idle_timeout = \"1000years\"\n"),
            "limits.connection_idle_timeout"
        );
        assert_eq!(
            invalid_key("[limits]\nuser_bytes_per_second = 18446744073709551615\n"),
            "limits.user_bytes_per_second"
        );
        assert_eq!(
            invalid_key("[auth]\ncredential_ttl = \"20years\"\nmax_credential_lifetime = \"20years\"\n"),
            "auth.max_credential_lifetime"
        );
    }

    #[test]
    fn secret_algorithms_are_sha1_or_sha256_at_least_one_no_repeats() {
        let both = parse("[auth]\nsecret_algorithms = [\"sha256\", \"sha1\"]\n").expect("valid");
        assert_eq!(both.auth.minting_algorithm(), auth::SecretAlgorithm::Sha256);
        assert_eq!(Config::default().auth.minting_algorithm(), auth::SecretAlgorithm::Sha1);
        assert_eq!(
            invalid_key("[auth]\nsecret_algorithms = []\n"),
            "auth.secret_algorithms"
        );
        assert_eq!(
            invalid_key("[auth]\nsecret_algorithms = [\"sha1\", \"sha1\"]\n"),
            "auth.secret_algorithms"
        );
        assert!(parse("[auth]\nsecret_algorithms = [\"md5\"]\n").is_err());
    }

    #[test]
    fn alternate_servers_must_be_reachable_unique_and_are_needed_by_the_other_keys() {
        let ok = parse("[alternate]\nservers = [\"192.0.2.2:3478\", \"[2001:db8::2]:3478\"]\ndomain = \"turn.example.com\"\nbytes_per_second = 1000\n")
            .expect("valid");
        assert_eq!(ok.alternate.servers.len(), 2);
        for bad in ["0.0.0.0:3478", "192.0.2.2:0", "224.0.0.1:3478"] {
            assert_eq!(
                invalid_key(&format!("[alternate]\nservers = [\"{bad}\"]\n")),
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
            invalid_key("[alternate]\nservers = [\"192.0.2.2:3478\"]\ndomain = \"192.0.2.2\"\n"),
            "alternate.domain"
        );
    }

    #[test]
    fn check_config_warns_about_a_secrets_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("turnpike-perm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets");
        std::fs::write(&file, "a-long-enough-secret\n").unwrap();
        let mut config = Config::default();
        config.auth.secrets_file = Some(file.clone());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(config
            .warnings()
            .iter()
            .any(|w| w.starts_with("auth.secrets_file") && w.contains("644")));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!config.warnings().iter().any(|w| w.starts_with("auth.secrets_file")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn placeholder_secrets_are_refused_and_short_ones_warned_about() {
        assert_eq!(invalid_key("[auth]\nsecrets = [\"Change-Me\"]\n"), "auth.secrets[0]");
        assert_eq!(invalid_key("[signaling]\napi_key = \"secret\"\n"), "signaling.api_key");
        let config = parse("[auth]\nsecrets = [\"s1\"]\n").expect("a short secret is accepted");
        assert!(config.warnings().iter().any(|w| w.contains("shorter than 16")));
        let config = parse("[auth]\nsecrets = [\"a-shared-secret-of-32-characters\"]\n").expect("valid");
        assert!(!config.warnings().iter().any(|w| w.contains("shorter than 16")));
    }

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
    fn check_config_warns_about_a_listener_inside_the_relay_range() {
        let mut config = Config::default();
        config.relay.ports = PortRange { low: 8000, high: 9000 };
        assert!(
            config.validate().is_ok(),
            "a start must not depend on a probed free port"
        );
        assert!(config
            .warnings()
            .iter()
            .any(|w| w
                == "listener 127.0.0.1:8080 is inside relay.ports 8000-9000: that port is never handed to a relay"));
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
        assert_ne!(
            config.user_key(&user),
            auth::long_term_key("user", &config.server.realm, "")
        );
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(invalid_key("[auth]\nsecrets = [\"ok\", \"\"]\n"), "auth.secrets[1]");
    }

    #[test]
    fn nonce_keys_are_at_most_four_of_at_least_16_characters() {
        let key = "\"0123456789abcdef\"";
        assert!(parse(&format!("[auth]\nnonce_keys = [{key}, {key}]\n")).is_ok());
        assert_eq!(invalid_key("[auth]\nnonce_keys = [\"short\"]\n"), "auth.nonce_keys");
        assert_eq!(
            invalid_key(&format!("[auth]\nnonce_keys = [{key}, {key}, {key}, {key}, {key}]\n")),
            "auth.nonce_keys"
        );
    }

    #[test]
    fn nonce_ttl_must_be_between_10s_and_1h() {
        assert_eq!(invalid_key("[auth]\nnonce_ttl = \"5s\"\n"), "auth.nonce_ttl");
        assert_eq!(invalid_key("[auth]\nnonce_ttl = \"2h\"\n"), "auth.nonce_ttl");
        assert!(parse("[auth]\nnonce_ttl = \"10s\"\n").is_ok());
        assert!(parse("[auth]\nnonce_ttl = \"1h\"\n").is_ok());
    }

    #[test]
    fn fleet_keys_are_checked_without_quoting_the_redis_url() {
        let ok = parse(
            "[fleet]\nredis_url = \"redis://:pw@127.0.0.1:6379/0\"\ninstance_id = \"a-1.x\"\nmembership_ttl = \"3s\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        let err = parse("[fleet]\nredis_url = \"http://:hunter2@h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fleet.redis_url") && !err.contains("hunter2"), "{err}");
        assert_eq!(invalid_key("[fleet]\nredis_url = \"redis://\"\n"), "fleet.redis_url");
        assert_eq!(invalid_key("[fleet]\ninstance_id = \"a b\"\n"), "fleet.instance_id");
        assert_eq!(invalid_key("[fleet]\nkey_prefix = \"\"\n"), "fleet.key_prefix");
        assert_eq!(
            invalid_key("[fleet]\nmembership_ttl = \"2s\"\n"),
            "fleet.membership_ttl"
        );
        assert_eq!(
            invalid_key("[fleet]\nmembership_ttl = \"6m\"\n"),
            "fleet.membership_ttl"
        );
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
    fn peer_connection_limits_are_bounded_on_both_sides() {
        for key in ["max_peer_connections_per_allocation", "max_peer_connections"] {
            assert_eq!(invalid_key(&format!("[limits]\n{key} = 0\n")), format!("limits.{key}"));
            assert!(parse(&format!("[limits]\n{key} = 1\n")).is_ok());
        }
        assert_eq!(
            invalid_key("[limits]\nmax_peer_connections_per_allocation = 1025\n"),
            "limits.max_peer_connections_per_allocation"
        );
        assert!(parse("[limits]\nmax_peer_connections_per_allocation = 1024\n").is_ok());
        assert_eq!(
            invalid_key("[limits]\nmax_peer_connections = 1048577\n"),
            "limits.max_peer_connections"
        );
        assert!(parse("[limits]\nmax_peer_connections = 1048576\n").is_ok());
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
    fn bad_log_settings_are_refused() {
        assert_eq!(invalid_key("[log]\nlevel = \"\"\n"), "log.level");
        assert_eq!(invalid_key("[log]\nlevel = \"info,[\"\n"), "log.level");
        let msg = parse("[log]\nformat = \"xml\"\n").unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
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
    fn failed_validation_leaves_resolved_secrets_alone() {
        let mut config = Config::default();
        config.auth.secrets = vec![Secret::new("a")];
        config.validate().unwrap();
        config.auth.secrets_file = Some(PathBuf::from("/nonexistent/turnpike/secrets"));
        assert!(config.validate().is_err());
        assert_eq!(config.auth.resolved_secrets.len(), 1);
    }

    #[test]
    fn the_admin_api_needs_a_long_key_and_a_loopback_address() {
        let key = "k".repeat(MIN_ADMIN_KEY);
        let on = |listen: &str, key: &str| format!("[admin]\nlisten = \"{listen}\"\n{key}");
        let config = parse(&on("127.0.0.1:8081", &format!("key = \"{key}\"\n"))).unwrap();
        assert_eq!(
            config.admin.resolved_key.as_ref().map(Secret::expose),
            Some(key.as_str())
        );
        assert!(parse(&on("[::1]:8081", &format!("key = \"{key}\"\n"))).is_ok());
        assert_eq!(invalid_key(&on("127.0.0.1:8081", "")), "admin.key");
        assert_eq!(invalid_key(&on("127.0.0.1:8081", "key = \"short-key\"\n")), "admin.key");
        assert_eq!(
            invalid_key(&on("0.0.0.0:8081", &format!("key = \"{key}\"\n"))),
            "admin.listen"
        );
        assert_eq!(
            invalid_key(&on("192.0.2.1:8081", &format!("key = \"{key}\"\n"))),
            "admin.listen"
        );
        let both = format!("key = \"{key}\"\nkey_file = \"/nonexistent\"\n");
        assert_eq!(invalid_key(&on("127.0.0.1:8081", &both)), "admin.key");
        assert_eq!(
            invalid_key(&on(
                "127.0.0.1:8081",
                "key_file = \"/nonexistent/turnpike/admin.key\"\n"
            )),
            "admin.key_file"
        );
        // Off by default, and a key alone turns nothing on.
        assert!(parse("").unwrap().admin.listen.is_none());
        assert!(parse(&format!("[admin]\nkey = \"{key}\"\n")).is_ok());
    }

    #[test]
    fn the_admin_key_is_read_from_the_first_line_of_its_file() {
        let dir = std::env::temp_dir().join(format!("turnpike-admin-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin.key");
        std::fs::write(&file, format!("\n  {}  \nignored\n", "x".repeat(32))).unwrap();
        let text = format!("[admin]\nlisten = \"127.0.0.1:0\"\nkey_file = \"{}\"\n", file.display());
        let config = parse(&text).unwrap();
        assert_eq!(
            config.admin.resolved_key.as_ref().map(Secret::expose),
            Some("x".repeat(32).as_str())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signaling_settings_are_checked() {
        for (text, key) in [
            ("[signaling]\nroom_size = 1", "signaling.room_size"),
            ("[signaling]\nroom_size = 65", "signaling.room_size"),
            ("[signaling]\nmax_rooms = 0", "signaling.max_rooms"),
            ("[signaling]\nmax_message_size = 100", "signaling.max_message_size"),
            ("[signaling]\nmax_rooms = 1048577", "signaling.max_rooms"),
            (
                "[signaling]\nmax_rooms_per_source = 0",
                "signaling.max_rooms_per_source",
            ),
            (
                "[signaling]\nmax_connections = 9223372036854775807",
                "signaling.max_connections",
            ),
            ("[signaling]\nmax_connections = 0", "signaling.max_connections"),
            (
                "[signaling]\nmax_connections_per_source = 1048577",
                "signaling.max_connections_per_source",
            ),
            ("[signaling]\nmax_outbox_bytes = 1000", "signaling.max_outbox_bytes"),
            ("[signaling]\nmax_outbox_bytes = 67108865", "signaling.max_outbox_bytes"),
            ("[signaling]\nmessages_per_second = 0", "signaling.messages_per_second"),
            ("[signaling]\nping_interval = \"10ms\"", "signaling.ping_interval"),
            ("[signaling]\nresume_grace = \"11m\"", "signaling.resume_grace"),
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
            ("[signaling]\nshare_tls_port = true", "signaling.share_tls_port"),
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
