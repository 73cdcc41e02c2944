//! The `peer_filter` and `cidr_parse` targets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::LazyLock;

use turnpike::proto::addr::RelayProtocol;
use turnpike::proto::live_relays::LiveRelays;
use turnpike::proto::peer_filter::{normalise, Cidr, PeerFilter, PeerRefusal, PeerRules};
use turnpike::proto::testkit;

/// The fuzzed server's own addresses, as its peer filter knows them.
pub const RELAY_V4: Ipv4Addr = testkit::RELAY_IP_V4;
pub const RELAY_V6: Ipv6Addr = testkit::RELAY_IP_V6;
pub const RELAY_PORTS: RangeInclusive<u16> = 50_000..=50_100;
pub const SERVICE_PORT: u16 = 3478;

/// The rules the server harness uses too: operator lists hold IPv4
/// networks only, so an IPv6 address that embeds an IPv4 one must be
/// judged exactly like that IPv4 address (checked below).
pub fn v4_rules() -> PeerRules {
    PeerRules {
        allow: vec!["127.0.0.0/8".parse().unwrap(), "10.1.0.0/16".parse().unwrap()],
        deny: vec!["1.2.3.0/24".parse().unwrap(), "8.8.4.4/32".parse().unwrap()],
        own_ips: vec![
            IpAddr::V4(RELAY_V4),
            IpAddr::V6(RELAY_V6),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ],
        relay_ports: RELAY_PORTS,
        relay_ips: vec![IpAddr::V4(RELAY_V4), IpAddr::V6(RELAY_V6)],
        service_ports: vec![SERVICE_PORT, 8080],
    }
}

/// Rules with IPv6 lists (matched against raw and normalised forms).
fn v6_rules() -> PeerRules {
    PeerRules {
        allow: vec!["fd00::/8".parse().unwrap(), "::ffff:10.0.0.0/104".parse().unwrap()],
        deny: vec!["2002::/16".parse().unwrap(), "64:ff9b::/96".parse().unwrap()],
        own_ips: vec!["::ffff:203.0.113.9".parse().unwrap()],
        relay_ports: RELAY_PORTS,
        relay_ips: vec!["::ffff:203.0.113.9".parse().unwrap()],
        service_ports: vec![SERVICE_PORT],
    }
}

/// No relay is live: an own address on a relay port is never a peer.
static NONE_LIVE: LazyLock<LiveRelays> = LazyLock::new(LiveRelays::default);

/// The check of a UDP peer with no relay live.
fn check(filter: &PeerFilter, peer: SocketAddr) -> Result<(), PeerRefusal> {
    filter.check(peer, RelayProtocol::Udp, &NONE_LIVE)
}

/// The `peer_filter` target: the first 18 bytes as an IPv6 address and
/// port, the first 6 as an IPv4 address and port.
pub fn fuzz_check(data: &[u8]) {
    let filters = [
        PeerFilter::new(v4_rules()),
        PeerFilter::new(v6_rules()),
        PeerFilter::new(PeerRules::default()),
    ];
    let v4_only = &filters[0];
    if let Some(b) = data.first_chunk::<6>() {
        let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        let port = u16::from_be_bytes([b[4], b[5]]);
        check_one(&filters, SocketAddr::new(IpAddr::V4(ip), port));
        // The IPv4-mapped form is judged like the IPv4 address.
        let mapped = SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), port);
        assert_eq!(
            check(v4_only, mapped),
            check(v4_only, SocketAddr::new(IpAddr::V4(ip), port)),
            "{mapped} judged unlike {ip}"
        );
    }
    if let Some(b) = data.first_chunk::<18>() {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&b[..16]);
        let ip = Ipv6Addr::from(octets);
        let port = u16::from_be_bytes([b[16], b[17]]);
        let peer = SocketAddr::new(IpAddr::V6(ip), port);
        check_one(&filters, peer);
        if let IpAddr::V4(embedded) = normalise(IpAddr::V6(ip)) {
            assert_eq!(
                check(v4_only, peer),
                check(v4_only, SocketAddr::new(IpAddr::V4(embedded), port)),
                "{peer} judged unlike the {embedded} it embeds"
            );
        }
    }
}

fn check_one(filters: &[PeerFilter], peer: SocketAddr) {
    for f in filters {
        match check(f, peer) {
            Err(refusal) => {
                assert!(!refusal.reason().is_empty());
                let _ = refusal.to_string();
            }
            // With no relay live, no port of the relay range on one of the
            // server's own addresses is reachable.
            Ok(()) => assert!(
                !(RELAY_PORTS.contains(&peer.port()) && (peer.ip().is_loopback() || peer.ip().is_unspecified())),
                "{peer}: a free relay port of the host let through"
            ),
        }
    }
    let raw = peer.ip();
    let once = normalise(raw);
    assert_eq!(normalise(once), once, "normalise is not idempotent on {raw}");
    match (raw, once) {
        (IpAddr::V4(_), _) => assert_eq!(once, raw),
        (IpAddr::V6(_), IpAddr::V6(_)) => assert_eq!(once, raw),
        (IpAddr::V6(_), IpAddr::V4(_)) => {}
    }
}

/// The `cidr_parse` target: what parses prints as text that parses to the
/// same network.
pub fn fuzz_cidr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cidr = match Cidr::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let printed = cidr.to_string();
    let again = Cidr::from_str(&printed)
        .unwrap_or_else(|e| panic!("{text:?} parsed, but its display {printed:?} does not: {e}"));
    assert_eq!(again, cidr, "{text:?} -> {printed:?} changed the network");
    let bits = if cidr.network().is_ipv4() { 32 } else { 128 };
    assert!(cidr.prefix() <= bits);
    assert_eq!(Cidr::new(cidr.network(), cidr.prefix()), Ok(cidr), "host bits set");
    assert!(cidr.contains(cidr.network()));
    if !text.contains('/') {
        assert_eq!(cidr.prefix(), bits, "a bare address is a host route");
    }
}
