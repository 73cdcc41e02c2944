//! `[limits]`: quotas on allocations, permissions, channels, connections,
//! frames and relayed bandwidth.
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: every
//! count at least 1, the capped ones within their caps, the timeouts and
//! the allocation lifetime in range. The ceiling on magnitudes that keeps
//! arithmetic from wrapping spans this section and `[signaling]`, and is in
//! `cross.rs`.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Cap on `limits.max_channels_per_allocation`: RFC 8656's channel range
/// (0x4000-0x4FFF) holds this many, far more than any real client binds
/// (the core also accepts RFC 5766's wider range, but the cap stays).
const MAX_CHANNELS: usize = 0x1000;

/// Caps on the RFC 6062 peer connection limits: far beyond any real
/// client (a TCP allocation connects to a handful of peers) or the file
/// descriptors one process gets, so a typo cannot mean "unlimited".
const MAX_PEER_CONNECTIONS_PER_ALLOCATION: usize = 1024;
const MAX_PEER_CONNECTIONS: usize = 1 << 20;

/// Smallest `limits.max_frame_size`: the datagram every IPv4 host must accept.
const MIN_FRAME_SIZE: usize = 576;

/// Lower bound of `limits.max_allocation_lifetime`.
const MIN_ALLOCATION_LIFETIME: Duration = Duration::from_secs(60);

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
    /// get over UDP, on each worker, with four seconds of it in a burst;
    /// beyond it unauthenticated requests from that address go unanswered
    /// but for one grace challenge a second, given in turn to senders
    /// (ports) that have not had one lately, which a real client's
    /// retransmission gets. Bounds what a spoofed source can reflect at a
    /// victim. TCP and TLS (not spoofable) neither need nor spend it. A
    /// challenge is about 60 bytes, so the default passes some 270 a
    /// second from one address (a large NAT). 0: no limit.
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

pub(super) fn check(limits: &LimitsSection) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use crate::config::tests::{invalid_key, parse};

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
}
