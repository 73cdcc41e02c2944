//! `[signaling]`: the WebSocket rooms, `/ice-servers` and the demo page
//! served on `listen.http`: their limits, timers, secrets and origins.
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: every
//! count and size within its bounds, the timers in order, non-empty
//! secrets that are no example's placeholder, origins and a TURN host of
//! the right shape. That `tls` needs `[tls]` and `share_tls_port` needs
//! `listen.tls` are rules across sections, in `cross.rs`.

use std::time::Duration;

use serde::Deserialize;

use super::value::{check_not_placeholder, is_valid_host};
use super::{ConfigError, Secret};

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
    /// Ports put in the STUN/TURN URLs handed to clients, per transport,
    /// where they differ from the listening ones: behind a load balancer
    /// or port forward that takes TLS on 443 to `listen.tls` on 5349,
    /// `turn_ports = { tls = 443 }`. Each one unset is the port of the
    /// first listener of its transport; a transport with no listener is
    /// never offered. Ports 1-65535. Default: `{}`.
    pub turn_ports: TurnPorts,
}

/// `signaling.turn_ports`: the advertised port of each transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnPorts {
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
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
            turn_ports: TurnPorts::default(),
        }
    }
}

pub(super) fn check(signaling: &SignalingSection) -> Result<(), ConfigError> {
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
    let ports = signaling.turn_ports;
    for (transport, port) in [("udp", ports.udp), ("tcp", ports.tcp), ("tls", ports.tls)] {
        if port == Some(0) {
            return Err(ConfigError::invalid(
                format!("signaling.turn_ports.{transport}"),
                "must be a port, 1-65535",
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

#[cfg(test)]
mod tests;
