//! The relay peer filter: may a client have the server relay to this peer?
//!
//! A TURN server relays to whatever the client names. Left unchecked, that
//! lets any authenticated client reach hosts on the server's own networks
//! (RFC 1918 ranges, cloud metadata at 169.254.169.254, loopback services)
//! that it could never reach directly. RFC 8656 §21 (notably §21.3) lays
//! out this risk of a relay being turned against its own network; this
//! module is the restriction that answers it.
//!
//! # Contract
//!
//! [`PeerFilter::check`] is called for every peer address named in a
//! CreatePermission, ChannelBind, Connect or Send indication, and
//! [`PeerFilter::still_reachable`] for every ChannelData packet, so both
//! are cheap: no I/O, no clock, no allocation, no lock, and no panic on any
//! input. All allocation happens once, in [`PeerFilter::new`]. The only
//! state they read that changes is the [`LiveRelays`] set, so a relay freed
//! while a channel or permission still names it is unreachable from the
//! next packet on.
//!
//! # Rules, in order (the first that matches decides)
//!
//! The peer's IP is first passed through [`normalise`], so that an IPv6
//! address which merely carries an IPv4 address (IPv4-mapped and
//! IPv4-compatible, RFC 4291 §2.5.5; NAT64, RFC 6052; 6to4, RFC 3056;
//! Teredo, RFC 4380) is judged as that IPv4 address. The operator's lists
//! are matched against both the normalised and the raw address, so that an
//! operator can also deny a transition prefix such as `2002::/16` as such.
//! "Own" means one of the server's own addresses, any loopback address, or
//! the unspecified address (which reaches the local host when sent to).
//!
//! 1. operator `deny` matches → [`PeerRefusal::ConfiguredDeny`];
//! 2. own address on a port of the relay range: allowed if it is exactly a
//!    live relay of this server (an advertised relay address, that port and
//!    protocol, on any shard: see [`LiveRelays`]), the usual path when both
//!    ends of a call are relay-only; otherwise [`PeerRefusal::NotARelay`], even
//!    if the operator allows the address, since whatever listens on a free
//!    relay-range port is the host's (Linux's ephemeral ports overlap the
//!    default range);
//! 3. own address on a service port → [`PeerRefusal::ServerService`], even if
//!    the operator allows the address;
//! 4. operator `allow` matches → allowed;
//! 5. own address → [`PeerRefusal::ServerAddress`];
//! 6. a special-purpose range that is not globally reachable (RFC 6890 and
//!    the IANA special-purpose address registries) → [`PeerRefusal::Reserved`];
//! 7. otherwise allowed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use super::addr::{Family, RelayProtocol};
use super::live_relays::LiveRelays;

/// An IPv4 or IPv6 network in CIDR notation, e.g. `10.0.0.0/8`, `::1/128`.
///
/// When parsed, a bare address means a host route (`/32` or `/128`). Host
/// bits are always zeroed, so two `Cidr`s naming the same network compare
/// equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with the given prefix length, host bits zeroed.
    ///
    /// Fails with [`CidrError::PrefixTooLong`] if `prefix` exceeds 32 for
    /// IPv4 or 128 for IPv6.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = address_bits(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix, max });
        }
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & ipv4_mask(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & ipv6_mask(prefix))),
        };
        Ok(Cidr { network, prefix })
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network.
    ///
    /// Always false across families: an IPv4 network does not contain
    /// IPv4-mapped IPv6 addresses here; [`PeerFilter`] normalises first.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => ip.to_bits() & ipv4_mask(self.prefix) == network.to_bits(),
            (IpAddr::V6(network), IpAddr::V6(ip)) => ip.to_bits() & ipv6_mask(self.prefix) == network.to_bits(),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Cidr, CidrError> {
        let (addr_text, prefix_text) = match input.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (input, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::InvalidAddress {
            input: input.to_owned(),
        })?;
        let max = address_bits(addr);
        let prefix = match prefix_text {
            None => max,
            Some(text) => parse_prefix(text).ok_or_else(|| CidrError::InvalidPrefix {
                input: input.to_owned(),
                max,
            })?,
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Digits only: `u8::from_str` would also take a sign (`/+8`), which is
/// not CIDR notation.
fn parse_prefix(text: &str) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn address_bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

// A shift by the full width overflows, so /0 comes out of `checked_shl`'s
// `None` rather than from the shift itself.
fn ipv4_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

fn ipv6_mask(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

/// Why a text or an address/prefix pair is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// The part before any `/` is not an IPv4 or IPv6 address.
    InvalidAddress { input: String },
    /// The part after `/` is not a whole number from 0 to `max`.
    InvalidPrefix { input: String, max: u8 },
    /// The prefix is longer than the address has bits.
    PrefixTooLong { prefix: u8, max: u8 },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::InvalidAddress { input } => write!(
                f,
                "invalid network {input:?}: expected an IPv4 or IPv6 address with an \
                 optional prefix length, such as \"10.0.0.0/8\" or \"2001:db8::/32\""
            ),
            CidrError::InvalidPrefix { input, max } => write!(
                f,
                "invalid network {input:?}: the prefix length after \"/\" must be a \
                 whole number from 0 to {max}"
            ),
            CidrError::PrefixTooLong { prefix, max } => {
                let family = if *max == 32 { "IPv4" } else { "IPv6" };
                write!(
                    f,
                    "prefix length /{prefix} is longer than an {family} address \
                     ({max} bits)"
                )
            }
        }
    }
}

impl std::error::Error for CidrError {}

/// Why a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRefusal {
    /// The operator's `[peers] deny` list names the peer.
    ConfiguredDeny,
    /// The peer is one of this server's own listeners (STUN/TURN, HTTP,
    /// metrics); a relay into them would let clients reach them from the
    /// server's own address.
    ServerService,
    /// The peer is this server itself, on a port that is not a relay port.
    ServerAddress,
    /// The peer is this server itself, on a port of the relay range that
    /// holds no live relay of the asked protocol (or on an address that is
    /// not an advertised relay address).
    NotARelay,
    /// The peer lies in a special-purpose range that is not globally
    /// reachable; the text names the range, e.g. `"RFC 1918 private"`.
    Reserved(&'static str),
}

impl PeerRefusal {
    /// A short, fixed explanation for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            PeerRefusal::ConfiguredDeny => "peer is in the operator's deny list",
            PeerRefusal::ServerService => "peer is one of this server's own service ports",
            PeerRefusal::ServerAddress => "peer is this server's own address",
            PeerRefusal::NotARelay => "peer is this server's own address on a relay port that holds no relay",
            PeerRefusal::Reserved(range) => range,
        }
    }
}

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// What the operator and the server's own configuration contribute to the
/// filter.
#[derive(Clone, Debug)]
pub struct PeerRules {
    /// The operator's `[peers] allow`: lifts the reserved-range and
    /// own-address refusals, never the service-port one.
    pub allow: Vec<Cidr>,
    /// The operator's `[peers] deny`: wins over everything.
    pub deny: Vec<Cidr>,
    /// The server's own addresses (relay IPs, listener IPs, external IP).
    /// Loopback and unspecified addresses count as own without being
    /// listed. A wildcard listener says nothing about the concrete
    /// interface addresses, so list those.
    pub own_ips: Vec<IpAddr>,
    /// The server's relay port range.
    pub relay_ports: RangeInclusive<u16>,
    /// The advertised relay addresses (XOR-RELAYED-ADDRESS IPs): the only
    /// own addresses a live relay is reached at.
    pub relay_ips: Vec<IpAddr>,
    /// Ports of the server's own listeners (STUN/TURN, HTTP, metrics).
    pub service_ports: Vec<u16>,
}

impl Default for PeerRules {
    /// No operator lists, no own addresses, and an empty relay port range.
    fn default() -> PeerRules {
        PeerRules {
            allow: Vec::new(),
            deny: Vec::new(),
            own_ips: Vec::new(),
            // `RangeInclusive` has no `Default`; start > end is empty.
            relay_ports: RangeInclusive::new(1, 0),
            relay_ips: Vec::new(),
            service_ports: Vec::new(),
        }
    }
}

/// Decides whether a client may relay to a peer; see the module docs for
/// the rules.
#[derive(Clone, Debug)]
pub struct PeerFilter {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    own_ips: Vec<IpAddr>,
    relay_ports: RangeInclusive<u16>,
    relay_ips: Vec<IpAddr>,
    service_ports: Vec<u16>,
}

impl PeerFilter {
    pub fn new(rules: PeerRules) -> PeerFilter {
        // Peers are compared in normalised form, so own addresses must be
        // too, or a configured ::ffff:a.b.c.d would never match.
        let mut own_ips: Vec<IpAddr> = rules.own_ips.into_iter().map(normalise).collect();
        own_ips.sort_unstable();
        own_ips.dedup();
        PeerFilter {
            allow: rules.allow,
            deny: rules.deny,
            own_ips,
            relay_ports: rules.relay_ports,
            relay_ips: rules.relay_ips,
            service_ports: rules.service_ports,
        }
    }

    /// `Ok(())` if the client may relay to `peer`.
    /// `live` is the set of this server's live relays (see the rules).
    pub fn check(&self, peer: SocketAddr, protocol: RelayProtocol, live: &LiveRelays) -> Result<(), PeerRefusal> {
        let raw = peer.ip();
        let ip = normalise(raw);
        let port = peer.port();
        let listed = |list: &[Cidr]| list.iter().any(|c| c.contains(ip) || c.contains(raw));

        if listed(&self.deny) {
            return Err(PeerRefusal::ConfiguredDeny);
        }
        let own = self.is_own(ip);
        if own && self.relay_ports.contains(&port) {
            return match self.is_live_relay(peer, protocol, live) {
                true => Ok(()),
                false => Err(PeerRefusal::NotARelay),
            };
        }
        if own && self.service_ports.contains(&port) {
            return Err(PeerRefusal::ServerService);
        }
        if listed(&self.allow) {
            return Ok(());
        }
        if own {
            return Err(PeerRefusal::ServerAddress);
        }
        if let Some(range) = reserved_range(ip) {
            return Err(PeerRefusal::Reserved(range));
        }
        Ok(())
    }

    /// For a peer that passed [`Self::check`]: false if it is one of this
    /// server's relay addresses whose relay is gone since. The fast path of
    /// every ChannelData packet: two address compares for any other peer.
    pub fn still_reachable(&self, peer: SocketAddr, protocol: RelayProtocol, live: &LiveRelays) -> bool {
        !self.relay_ips.contains(&peer.ip())
            || !self.relay_ports.contains(&peer.port())
            || self.is_live_relay(peer, protocol, live)
    }

    /// Exactly a live relay: an advertised relay address (as given, not
    /// normalised: an IPv4-mapped spelling reaches no relay socket), on a
    /// port whose relay of `protocol` is live.
    fn is_live_relay(&self, peer: SocketAddr, protocol: RelayProtocol, live: &LiveRelays) -> bool {
        self.relay_ips.contains(&peer.ip()) && live.contains(Family::of(peer), protocol, peer.port())
    }

    /// `ip` must already be normalised.
    fn is_own(&self, ip: IpAddr) -> bool {
        // Sending to the unspecified address reaches the local host.
        ip.is_loopback() || ip.is_unspecified() || self.own_ips.contains(&ip)
    }
}

/// The IPv4 address an IPv6 address stands for, if it embeds one;
/// otherwise the address itself.
///
/// * IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2);
/// * IPv4-compatible `::a.b.c.d` (RFC 4291 §2.5.5.1), except `::` and
///   `::1`, which are the IPv6 unspecified and loopback addresses;
/// * NAT64 well-known prefix `64:ff9b::/96` (RFC 6052);
/// * 6to4 `2002::/16`, IPv4 in bits 16..48 (RFC 3056);
/// * Teredo `2001::/32` (RFC 4380): the client's public IPv4, stored
///   inverted in the last 32 bits. The Teredo server's IPv4 in bits 32..64
///   is not where the traffic ends up, so it is not what is judged.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
    }
}

/// Whether `ip` is globally reachable by the built-in list of
/// special-purpose ranges (the one the default policy refuses as peers):
/// private, loopback, link-local, unique local, documentation and the
/// like are not, judged after [`normalise`].
pub fn is_global(ip: IpAddr) -> bool {
    reserved_range(normalise(ip)).is_none()
}

fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let s = ip.segments();
    let last_32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let first_96 = &s[..6];

    if first_96 == [0, 0, 0, 0, 0, 0xffff] {
        return Some(last_32);
    }
    if first_96 == [0, 0, 0, 0, 0, 0] {
        return (last_32.to_bits() > 1).then_some(last_32);
    }
    if first_96 == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last_32);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]));
    }
    None
}

// Special-purpose IPv4 ranges that are not globally reachable (RFC 6890,
// IANA IPv4 Special-Purpose Address Registry). Searched in order, so a more
// specific entry goes before the range that contains it, to be named.
const RESERVED_IPV4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "RFC 1122 \"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "RFC 1918 private"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "RFC 6598 shared address space (CGNAT)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "RFC 1122 loopback"),
    (
        Ipv4Addr::new(169, 254, 169, 254),
        32,
        "cloud metadata service (RFC 3927 link-local)",
    ),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "RFC 3927 link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "RFC 1918 private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "RFC 6890 IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "RFC 5737 documentation"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "RFC 1918 private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "RFC 2544 benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "RFC 5737 documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "RFC 5737 documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "RFC 5771 multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "RFC 919 limited broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "RFC 1112 reserved"),
];

// Special-purpose IPv6 ranges that are not globally reachable (RFC 6890,
// IANA IPv6 Special-Purpose Address Registry). The transition forms that
// embed IPv4 never get here: `normalise` turned them into IPv4 already.
const RESERVED_IPV6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128, "RFC 4291 unspecified"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, "RFC 4291 loopback"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "RFC 8215 local-use IPv4/IPv6 translation",
    ),
    // What is left of ::/8 once the mapped, compatible and NAT64 forms are
    // normalised (e.g. ::ffff:0:a.b.c.d, or 64:ff9b::/32 outside the /96)
    // is unassigned; a translator configured with such a prefix would embed
    // an IPv4 address this filter cannot see.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 8, "RFC 4291 reserved"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "RFC 6666 discard-only"),
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48, "RFC 5180 benchmarking"),
    (Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28, "RFC 4843 ORCHID"),
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28, "RFC 7343 ORCHIDv2"),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "RFC 3849 documentation",
    ),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "RFC 9637 documentation"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "RFC 4193 unique local"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "RFC 4291 link-local"),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "RFC 3879 site-local (deprecated)",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "RFC 4291 multicast"),
];

/// The name of the default-deny range holding `ip`, which must already be
/// normalised.
fn reserved_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => {
            let bits = ip.to_bits();
            RESERVED_IPV4
                .iter()
                .find(|(network, prefix, _)| bits & ipv4_mask(*prefix) == network.to_bits())
                .map(|(_, _, name)| *name)
        }
        IpAddr::V6(ip) => {
            let bits = ip.to_bits();
            RESERVED_IPV6
                .iter()
                .find(|(network, prefix, _)| bits & ipv6_mask(*prefix) == network.to_bits())
                .map(|(_, _, name)| *name)
        }
    }
}

#[cfg(test)]
mod tests;
