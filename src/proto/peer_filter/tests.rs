use super::*;
use crate::proto::addr::ShardId;

const OWN_IPV4: Ipv4Addr = Ipv4Addr::new(5, 6, 7, 8);
const OWN_IPV6: Ipv6Addr = Ipv6Addr::new(0x2a01, 0x4f8, 0, 0, 0, 0, 0, 0x10);
const RELAY_PORT: u16 = 50_000;
const TURN_PORT: u16 = 3478;
const METRICS_PORT: u16 = 9100;
const PLAIN_PORT: u16 = 5000;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn at(text: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(text), port)
}

fn rules() -> PeerRules {
    PeerRules {
        allow: Vec::new(),
        deny: Vec::new(),
        own_ips: vec![IpAddr::V4(OWN_IPV4), IpAddr::V6(OWN_IPV6)],
        relay_ports: 49152..=65535,
        relay_ips: vec![IpAddr::V4(OWN_IPV4), IpAddr::V6(OWN_IPV6)],
        service_ports: vec![TURN_PORT, 5349, 8080, METRICS_PORT],
    }
}

/// [`RELAY_PORT`] holds a live UDP relay in both families; no other
/// port of the range does.
static LIVE: std::sync::LazyLock<LiveRelays> = std::sync::LazyLock::new(|| {
    let live = LiveRelays::default();
    live.insert(Family::V4, RelayProtocol::Udp, RELAY_PORT, ShardId(0));
    live.insert(Family::V6, RelayProtocol::Udp, RELAY_PORT, ShardId(0));
    live
});

/// The check for a UDP peer under [`LIVE`].
trait CheckUdp {
    fn check_udp(&self, peer: SocketAddr) -> Result<(), PeerRefusal>;
}

impl CheckUdp for PeerFilter {
    fn check_udp(&self, peer: SocketAddr) -> Result<(), PeerRefusal> {
        self.check(peer, RelayProtocol::Udp, &LIVE)
    }
}

fn filter() -> PeerFilter {
    PeerFilter::new(rules())
}

fn filter_with(allow: &[&str], deny: &[&str]) -> PeerFilter {
    PeerFilter::new(PeerRules {
        allow: allow.iter().map(|c| cidr(c)).collect(),
        deny: deny.iter().map(|c| cidr(c)).collect(),
        ..rules()
    })
}

fn reserved(name: &'static str) -> Result<(), PeerRefusal> {
    Err(PeerRefusal::Reserved(name))
}

// ---- default ranges -------------------------------------------------

const RFC1918: Option<&str> = Some("RFC 1918 private");
const DOC_V4: Option<&str> = Some("RFC 5737 documentation");

/// First and last address of each range, and the neighbours just
/// outside it (which may belong to an adjacent range).
const IPV4_RANGE_EDGES: &[(&str, Option<&str>)] = &[
    ("0.0.0.0", Some("RFC 1122 \"this network\"")),
    ("0.255.255.255", Some("RFC 1122 \"this network\"")),
    ("1.0.0.0", None),
    ("9.255.255.255", None),
    ("10.0.0.0", RFC1918),
    ("10.255.255.255", RFC1918),
    ("11.0.0.0", None),
    ("100.63.255.255", None),
    ("100.64.0.0", Some("RFC 6598 shared address space (CGNAT)")),
    ("100.127.255.255", Some("RFC 6598 shared address space (CGNAT)")),
    ("100.128.0.0", None),
    ("126.255.255.255", None),
    ("127.0.0.0", Some("RFC 1122 loopback")),
    ("127.255.255.255", Some("RFC 1122 loopback")),
    ("128.0.0.0", None),
    ("169.253.255.255", None),
    ("169.254.0.0", Some("RFC 3927 link-local")),
    ("169.254.169.253", Some("RFC 3927 link-local")),
    ("169.254.169.254", Some("cloud metadata service (RFC 3927 link-local)")),
    ("169.254.169.255", Some("RFC 3927 link-local")),
    ("169.254.255.255", Some("RFC 3927 link-local")),
    ("169.255.0.0", None),
    ("172.15.255.255", None),
    ("172.16.0.0", RFC1918),
    ("172.31.255.255", RFC1918),
    ("172.32.0.0", None),
    ("191.255.255.255", None),
    ("192.0.0.0", Some("RFC 6890 IETF protocol assignments")),
    ("192.0.0.255", Some("RFC 6890 IETF protocol assignments")),
    ("192.0.1.0", None),
    ("192.0.1.255", None),
    ("192.0.2.0", DOC_V4),
    ("192.0.2.255", DOC_V4),
    ("192.0.3.0", None),
    ("192.167.255.255", None),
    ("192.168.0.0", RFC1918),
    ("192.168.255.255", RFC1918),
    ("192.169.0.0", None),
    ("198.17.255.255", None),
    ("198.18.0.0", Some("RFC 2544 benchmarking")),
    ("198.19.255.255", Some("RFC 2544 benchmarking")),
    ("198.20.0.0", None),
    ("198.51.99.255", None),
    ("198.51.100.0", DOC_V4),
    ("198.51.100.255", DOC_V4),
    ("198.51.101.0", None),
    ("203.0.112.255", None),
    ("203.0.113.0", DOC_V4),
    ("203.0.113.255", DOC_V4),
    ("203.0.114.0", None),
    ("223.255.255.255", None),
    ("224.0.0.0", Some("RFC 5771 multicast")),
    ("239.255.255.255", Some("RFC 5771 multicast")),
    ("240.0.0.0", Some("RFC 1112 reserved")),
    ("255.255.255.254", Some("RFC 1112 reserved")),
    ("255.255.255.255", Some("RFC 919 limited broadcast")),
];

const ULA: Option<&str> = Some("RFC 4193 unique local");
const LINK_LOCAL_V6: Option<&str> = Some("RFC 4291 link-local");
const SITE_LOCAL: Option<&str> = Some("RFC 3879 site-local (deprecated)");
const RESERVED_V6: Option<&str> = Some("RFC 4291 reserved");

const IPV6_RANGE_EDGES: &[(&str, Option<&str>)] = &[
    ("::", Some("RFC 4291 unspecified")),
    ("::1", Some("RFC 4291 loopback")),
    ("::ffff:0:0:0", RESERVED_V6),
    ("::ffff:0:808:808", RESERVED_V6),
    ("::1:0:0:0", RESERVED_V6),
    ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", RESERVED_V6),
    ("100::", Some("RFC 6666 discard-only")),
    ("100::ffff:ffff:ffff:ffff", Some("RFC 6666 discard-only")),
    ("100:0:0:1::", None),
    ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", RESERVED_V6),
    ("64:ff9b:1::", Some("RFC 8215 local-use IPv4/IPv6 translation")),
    (
        "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
        Some("RFC 8215 local-use IPv4/IPv6 translation"),
    ),
    ("64:ff9b:2::", RESERVED_V6),
    ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:2::", Some("RFC 5180 benchmarking")),
    ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some("RFC 5180 benchmarking")),
    ("2001:2:1::", None),
    ("2001:f:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:10::", Some("RFC 4843 ORCHID")),
    ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", Some("RFC 4843 ORCHID")),
    ("2001:20::", Some("RFC 7343 ORCHIDv2")),
    ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", Some("RFC 7343 ORCHIDv2")),
    ("2001:30::", None),
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:db8::", Some("RFC 3849 documentation")),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some("RFC 3849 documentation")),
    ("2001:db9::", None),
    ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("3fff::", Some("RFC 9637 documentation")),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Some("RFC 9637 documentation")),
    ("3fff:1000::", None),
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("fc00::", ULA),
    ("fd00:ec2::254", ULA),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ULA),
    ("fe00::", None),
    ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("fe80::", LINK_LOCAL_V6),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LINK_LOCAL_V6),
    ("fec0::", SITE_LOCAL),
    ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", SITE_LOCAL),
    ("ff00::", Some("RFC 4291 multicast")),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("RFC 4291 multicast")),
    ("2a00:1450:4001:82a::200e", None),
];

#[test]
fn every_default_range_is_refused_at_both_edges_and_its_neighbours_are_not() {
    for (text, expected) in IPV4_RANGE_EDGES.iter().chain(IPV6_RANGE_EDGES) {
        assert_eq!(reserved_range(ip(text)), *expected, "{text}");
    }
}

#[test]
fn check_refuses_every_default_range_unless_the_address_is_the_server_itself() {
    let filter = filter();
    for (text, expected) in IPV4_RANGE_EDGES.iter().chain(IPV6_RANGE_EDGES) {
        let peer = ip(text);
        let want = if peer.is_loopback() || peer.is_unspecified() {
            Err(PeerRefusal::ServerAddress)
        } else {
            expected.map_or(Ok(()), |name| Err(PeerRefusal::Reserved(name)))
        };
        assert_eq!(filter.check_udp(SocketAddr::new(peer, PLAIN_PORT)), want, "{text}");
    }
}

#[test]
fn default_tables_hold_canonical_networks() {
    for (network, prefix, name) in RESERVED_IPV4 {
        let c = Cidr::new(IpAddr::V4(*network), *prefix).expect(name);
        assert_eq!(c.network(), IpAddr::V4(*network), "{name}");
    }
    for (network, prefix, name) in RESERVED_IPV6 {
        let c = Cidr::new(IpAddr::V6(*network), *prefix).expect(name);
        assert_eq!(c.network(), IpAddr::V6(*network), "{name}");
    }
}

#[test]
fn public_peers_are_allowed() {
    let filter = filter();
    for peer in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
        assert_eq!(filter.check_udp(at(peer, PLAIN_PORT)), Ok(()), "{peer}");
        assert_eq!(filter.check_udp(at(peer, TURN_PORT)), Ok(()), "{peer}");
    }
}

#[test]
fn cloud_metadata_is_refused_by_name() {
    assert_eq!(
        filter().check_udp(at("169.254.169.254", 80)),
        reserved("cloud metadata service (RFC 3927 link-local)")
    );
}

// ---- embedded IPv4 --------------------------------------------------

#[test]
fn ipv4_mapped_addresses_are_judged_as_their_ipv4() {
    let filter = filter();
    assert_eq!(normalise(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    assert_eq!(
        filter.check_udp(at("::ffff:10.0.0.1", 80)),
        reserved("RFC 1918 private")
    );
    assert_eq!(
        filter.check_udp(at("::ffff:169.254.169.254", 80)),
        reserved("cloud metadata service (RFC 3927 link-local)")
    );
    assert_eq!(filter.check_udp(at("::ffff:8.8.8.8", 53)), Ok(()));
}

#[test]
fn ipv4_mapped_loopback_is_refused_as_server_address() {
    assert_eq!(
        filter().check_udp(at("::ffff:127.0.0.1", PLAIN_PORT)),
        Err(PeerRefusal::ServerAddress)
    );
}

#[test]
fn ipv4_compatible_addresses_are_judged_as_their_ipv4() {
    let filter = filter();
    assert_eq!(normalise(ip("::10.0.0.1")), ip("10.0.0.1"));
    assert_eq!(filter.check_udp(at("::10.0.0.1", 80)), reserved("RFC 1918 private"));
    assert_eq!(filter.check_udp(at("::127.0.0.1", 80)), Err(PeerRefusal::ServerAddress));
    assert_eq!(filter.check_udp(at("::1.1.1.1", 53)), Ok(()));
    // The lowest non-special compatible address is "this network".
    assert_eq!(normalise(ip("::2")), ip("0.0.0.2"));
}

#[test]
fn unspecified_and_loopback_ipv6_are_not_mistaken_for_ipv4_compatible() {
    assert_eq!(normalise(ip("::")), ip("::"));
    assert_eq!(normalise(ip("::1")), ip("::1"));
    let filter = filter();
    assert_eq!(filter.check_udp(at("::1", PLAIN_PORT)), Err(PeerRefusal::ServerAddress));
    assert_eq!(filter.check_udp(at("::", PLAIN_PORT)), Err(PeerRefusal::ServerAddress));
}

#[test]
fn nat64_addresses_are_judged_as_their_ipv4() {
    let filter = filter();
    assert_eq!(normalise(ip("64:ff9b::a9fe:a9fe")), ip("169.254.169.254"));
    assert_eq!(
        filter.check_udp(at("64:ff9b::169.254.169.254", 80)),
        reserved("cloud metadata service (RFC 3927 link-local)")
    );
    assert_eq!(
        filter.check_udp(at("64:ff9b::192.168.1.1", 80)),
        reserved("RFC 1918 private")
    );
    assert_eq!(filter.check_udp(at("64:ff9b::8.8.8.8", 53)), Ok(()));
}

#[test]
fn addresses_just_outside_the_nat64_prefix_are_not_normalised_but_reserved() {
    let outside = ip("64:ff9b:0:0:0:1:a00:1");
    assert_eq!(normalise(outside), outside);
    assert_eq!(
        filter().check_udp(SocketAddr::new(outside, 80)),
        reserved("RFC 4291 reserved")
    );
}

#[test]
fn six_to_four_addresses_are_judged_as_their_ipv4() {
    let filter = filter();
    // 2002:AABB:CCDD:: carries AA.BB.CC.DD.
    assert_eq!(normalise(ip("2002:a00:1::1")), ip("10.0.0.1"));
    assert_eq!(filter.check_udp(at("2002:a00:1::1", 80)), reserved("RFC 1918 private"));
    assert_eq!(
        filter.check_udp(at("2002:7f00:1::1", 80)),
        Err(PeerRefusal::ServerAddress)
    );
    assert_eq!(
        filter.check_udp(at("2002:a9fe:a9fe::", 80)),
        reserved("cloud metadata service (RFC 3927 link-local)")
    );
    assert_eq!(filter.check_udp(at("2002:808:808::1", 53)), Ok(()));
}

#[test]
fn teredo_addresses_are_judged_by_the_client_ipv4_not_the_teredo_server() {
    let filter = filter();
    // Client 10.0.0.1 is stored inverted: f5ff:fffe. Server 8.8.8.8.
    let private_client = "2001:0:808:808:0:0:f5ff:fffe";
    assert_eq!(normalise(ip(private_client)), ip("10.0.0.1"));
    assert_eq!(filter.check_udp(at(private_client, 80)), reserved("RFC 1918 private"));
    // Client 127.0.0.1 inverted: 80ff:fffe.
    assert_eq!(
        filter.check_udp(at("2001:0:808:808:0:0:80ff:fffe", 80)),
        Err(PeerRefusal::ServerAddress)
    );
    // Client 169.254.169.254 inverted: 5601:5601.
    assert_eq!(
        filter.check_udp(at("2001:0:808:808::5601:5601", 80)),
        reserved("cloud metadata service (RFC 3927 link-local)")
    );
    // Client 8.8.8.8 (inverted f7f7:f7f7) behind a private Teredo server.
    let public_client = "2001:0:a00:1:0:0:f7f7:f7f7";
    assert_eq!(normalise(ip(public_client)), ip("8.8.8.8"));
    assert_eq!(filter.check_udp(at(public_client, 53)), Ok(()));
}

#[test]
fn embedded_forms_are_judged_exactly_like_the_ipv4_they_carry() {
    let filter = filter();
    // A fixed pseudo-random walk over the IPv4 space (no RNG crate).
    let mut state: u32 = 0x1234_5678;
    let mut samples: Vec<u32> = IPV4_RANGE_EDGES
        .iter()
        .map(|(text, _)| match ip(text) {
            IpAddr::V4(v4) => v4.to_bits(),
            IpAddr::V6(_) => unreachable!(),
        })
        .collect();
    for _ in 0..20_000 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        samples.push(state);
    }
    samples.push(OWN_IPV4.to_bits());
    for bits in samples {
        let v4 = Ipv4Addr::from_bits(bits);
        let o = v4.octets();
        let w = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
        let mut forms = vec![
            v4.to_ipv6_mapped(),
            Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, w(o[0], o[1]), w(o[2], o[3])),
            Ipv6Addr::new(0x2002, w(o[0], o[1]), w(o[2], o[3]), 0, 0, 0, 0, 1),
            Ipv6Addr::new(0x2001, 0, 0x808, 0x808, 0, 0, w(!o[0], !o[1]), w(!o[2], !o[3])),
        ];
        if bits > 1 {
            forms.push(v4.to_ipv6_compatible());
        }
        // A port of the relay range without a live relay; the live one
        // is reached only at its exact address (below).
        for port in [PLAIN_PORT, TURN_PORT, RELAY_PORT + 1] {
            let want = filter.check_udp(SocketAddr::new(IpAddr::V4(v4), port));
            for form in &forms {
                let peer = SocketAddr::new(IpAddr::V6(*form), port);
                assert_eq!(filter.check_udp(peer), want, "{peer} vs {v4}");
            }
        }
        if v4 == OWN_IPV4 {
            for form in &forms {
                let peer = SocketAddr::new(IpAddr::V6(*form), RELAY_PORT);
                assert_eq!(filter.check_udp(peer), Err(PeerRefusal::NotARelay), "{peer}");
            }
        }
    }
}

#[test]
fn ordinary_ipv6_addresses_are_left_alone() {
    for text in ["2a00:1450::1", "fe80::1", "ff02::1", "2001:db8::1", "64:ff9b:1::a00:1"] {
        assert_eq!(normalise(ip(text)), ip(text), "{text}");
    }
    assert_eq!(normalise(ip("10.0.0.1")), ip("10.0.0.1"));
}

// ---- own addresses and ports ----------------------------------------

#[test]
fn own_ip_on_a_relay_port_is_allowed_only_as_exactly_a_live_relay() {
    let filter = filter();
    let live_v4 = SocketAddr::new(IpAddr::V4(OWN_IPV4), RELAY_PORT);
    assert_eq!(filter.check_udp(live_v4), Ok(()));
    assert_eq!(
        filter.check_udp(SocketAddr::new(IpAddr::V6(OWN_IPV6), RELAY_PORT)),
        Ok(())
    );
    // The live relay is UDP: a TCP peer connection to it is not a relay.
    assert_eq!(
        filter.check(live_v4, RelayProtocol::Tcp, &LIVE),
        Err(PeerRefusal::NotARelay)
    );
    // Free ports of the range, and own addresses that are not an
    // advertised relay address, reach whatever the host runs there.
    assert_eq!(
        filter.check_udp(SocketAddr::new(IpAddr::V6(OWN_IPV6), 49152)),
        Err(PeerRefusal::NotARelay)
    );
    assert_eq!(filter.check_udp(at("127.0.0.1", 65535)), Err(PeerRefusal::NotARelay));
    assert_eq!(filter.check_udp(at("::1", RELAY_PORT)), Err(PeerRefusal::NotARelay));
    assert_eq!(
        filter.check_udp(at("127.0.0.1", PLAIN_PORT)),
        Err(PeerRefusal::ServerAddress)
    );
}

#[test]
fn a_free_relay_port_stays_refused_when_the_operator_allows_loopback() {
    let filter = filter_with(&["127.0.0.0/8"], &[]);
    assert_eq!(filter.check_udp(at("127.0.0.1", 65535)), Err(PeerRefusal::NotARelay));
    assert_eq!(filter.check_udp(at("127.0.0.1", PLAIN_PORT)), Ok(()));
}

#[test]
fn only_addresses_outside_every_special_range_are_global() {
    for global in ["2a01:4f8::10", "2001:4860::8888", "8.8.8.8", "5.6.7.8"] {
        assert!(is_global(global.parse().unwrap()), "{global}");
    }
    for special in [
        "fd00::1",
        "fc12::1",
        "fe80::1",
        "::1",
        "2001:db8::1",
        "10.0.0.1",
        "::ffff:192.168.1.1",
        "2002:c0a8:0101::1",
    ] {
        assert!(!is_global(special.parse().unwrap()), "{special}");
    }
}

#[test]
fn a_relay_that_goes_is_no_longer_reachable() {
    let filter = filter();
    let live = LiveRelays::default();
    let relay = SocketAddr::new(IpAddr::V4(OWN_IPV4), 50_002);
    live.insert(Family::V4, RelayProtocol::Udp, 50_002, ShardId(0));
    assert_eq!(filter.check(relay, RelayProtocol::Udp, &live), Ok(()));
    assert!(filter.still_reachable(relay, RelayProtocol::Udp, &live));
    live.remove(Family::V4, RelayProtocol::Udp, 50_002);
    assert!(!filter.still_reachable(relay, RelayProtocol::Udp, &live));
    assert_eq!(
        filter.check(relay, RelayProtocol::Udp, &live),
        Err(PeerRefusal::NotARelay)
    );
    // Any other peer stays reachable without a look at the set.
    assert!(filter.still_reachable(at("8.8.8.8", 50_002), RelayProtocol::Udp, &live));
}

#[test]
fn own_public_ip_on_a_non_relay_port_is_refused_unless_allowed() {
    let peer = SocketAddr::new(IpAddr::V4(OWN_IPV4), PLAIN_PORT);
    assert_eq!(filter().check_udp(peer), Err(PeerRefusal::ServerAddress));
    assert_eq!(filter_with(&["5.6.7.8/32"], &[]).check_udp(peer), Ok(()));
    let peer_v6 = SocketAddr::new(IpAddr::V6(OWN_IPV6), 49151);
    assert_eq!(filter().check_udp(peer_v6), Err(PeerRefusal::ServerAddress));
}

#[test]
fn own_service_ports_are_refused_even_when_the_address_is_allowed() {
    let everything = filter_with(&["0.0.0.0/0", "::/0"], &[]);
    for peer in [
        SocketAddr::new(IpAddr::V4(OWN_IPV4), TURN_PORT),
        SocketAddr::new(IpAddr::V6(OWN_IPV6), METRICS_PORT),
        at("127.0.0.1", TURN_PORT),
        at("::ffff:127.0.0.1", 8080),
        at("::1", 5349),
        at("0.0.0.0", TURN_PORT),
    ] {
        assert_eq!(everything.check_udp(peer), Err(PeerRefusal::ServerService), "{peer}");
    }
    let loopback = filter_with(&["127.0.0.0/8"], &[]);
    assert_eq!(
        loopback.check_udp(at("127.0.0.1", TURN_PORT)),
        Err(PeerRefusal::ServerService)
    );
}

#[test]
fn service_ports_of_other_hosts_are_not_special() {
    assert_eq!(filter().check_udp(at("8.8.8.8", TURN_PORT)), Ok(()));
}

#[test]
fn own_ips_match_across_mapped_and_plain_forms() {
    let configured_mapped = PeerFilter::new(PeerRules {
        own_ips: vec![ip("::ffff:5.6.7.8")],
        ..rules()
    });
    assert_eq!(
        configured_mapped.check_udp(at("5.6.7.8", PLAIN_PORT)),
        Err(PeerRefusal::ServerAddress)
    );
    assert_eq!(configured_mapped.check_udp(at("5.6.7.8", RELAY_PORT)), Ok(()));
    assert_eq!(
        filter().check_udp(at("::ffff:5.6.7.8", PLAIN_PORT)),
        Err(PeerRefusal::ServerAddress)
    );
    assert_eq!(
        filter().check_udp(at("2002:506:708::", TURN_PORT)),
        Err(PeerRefusal::ServerService)
    );
}

#[test]
fn unspecified_peer_counts_as_the_server_itself() {
    let filter = filter();
    assert_eq!(
        filter.check_udp(at("0.0.0.0", PLAIN_PORT)),
        Err(PeerRefusal::ServerAddress)
    );
    assert_eq!(filter.check_udp(at("0.0.0.0", RELAY_PORT)), Err(PeerRefusal::NotARelay));
    assert_eq!(filter.check_udp(at("::", TURN_PORT)), Err(PeerRefusal::ServerService));
}

#[test]
fn empty_default_rules_still_refuse_loopback_and_reserved_ranges() {
    let filter = PeerFilter::new(PeerRules::default());
    assert_eq!(
        filter.check_udp(at("127.0.0.1", RELAY_PORT)),
        Err(PeerRefusal::ServerAddress)
    );
    assert_eq!(
        filter.check_udp(at("10.0.0.1", RELAY_PORT)),
        reserved("RFC 1918 private")
    );
    assert_eq!(filter.check_udp(at("8.8.8.8", RELAY_PORT)), Ok(()));
}

// ---- operator lists -------------------------------------------------

#[test]
fn operator_allow_overrides_the_default_deny_list() {
    let filter = filter_with(&["127.0.0.0/8", "10.0.0.0/8", "fd00::/8"], &[]);
    assert_eq!(filter.check_udp(at("127.0.0.1", PLAIN_PORT)), Ok(()));
    assert_eq!(filter.check_udp(at("10.1.2.3", 80)), Ok(()));
    assert_eq!(filter.check_udp(at("::ffff:10.1.2.3", 80)), Ok(()));
    assert_eq!(filter.check_udp(at("fd12::1", 80)), Ok(()));
    assert_eq!(filter.check_udp(at("192.168.0.1", 80)), reserved("RFC 1918 private"));
}

#[test]
fn operator_allow_also_matches_the_raw_ipv6_form() {
    let filter = filter_with(&["64:ff9b::/96"], &[]);
    assert_eq!(filter.check_udp(at("64:ff9b::10.0.0.1", 80)), Ok(()));
    assert_eq!(filter.check_udp(at("10.0.0.1", 80)), reserved("RFC 1918 private"));
}

#[test]
fn operator_deny_overrides_everything_including_relay_ports() {
    let own = SocketAddr::new(IpAddr::V4(OWN_IPV4), RELAY_PORT);
    assert_eq!(
        filter_with(&[], &["5.6.7.8/32"]).check_udp(own),
        Err(PeerRefusal::ConfiguredDeny)
    );
    assert_eq!(
        filter_with(&[], &["127.0.0.0/8"]).check_udp(at("127.0.0.1", RELAY_PORT)),
        Err(PeerRefusal::ConfiguredDeny)
    );
    let deny_all = filter_with(&["0.0.0.0/0"], &["0.0.0.0/0"]);
    assert_eq!(deny_all.check_udp(at("8.8.8.8", 53)), Err(PeerRefusal::ConfiguredDeny));
    assert_eq!(
        deny_all.check_udp(at("127.0.0.1", TURN_PORT)),
        Err(PeerRefusal::ConfiguredDeny)
    );
}

#[test]
fn operator_deny_matches_both_the_raw_and_the_embedded_address() {
    let by_prefix = filter_with(&[], &["2002::/16"]);
    assert_eq!(
        by_prefix.check_udp(at("2002:808:808::1", 53)),
        Err(PeerRefusal::ConfiguredDeny)
    );
    assert_eq!(by_prefix.check_udp(at("8.8.8.8", 53)), Ok(()));

    let by_ipv4 = filter_with(&[], &["8.8.8.0/24"]);
    for peer in ["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::"] {
        assert_eq!(
            by_ipv4.check_udp(at(peer, 53)),
            Err(PeerRefusal::ConfiguredDeny),
            "{peer}"
        );
    }
    assert_eq!(by_ipv4.check_udp(at("8.8.4.4", 53)), Ok(()));
}

// ---- PeerRefusal --------------------------------------------------------

#[test]
fn refusal_reasons_are_fixed_text_and_name_the_range() {
    assert_eq!(PeerRefusal::Reserved("RFC 1918 private").reason(), "RFC 1918 private");
    for refusal in [
        PeerRefusal::ConfiguredDeny,
        PeerRefusal::ServerService,
        PeerRefusal::ServerAddress,
    ] {
        assert!(!refusal.reason().is_empty());
        assert_eq!(refusal.to_string(), refusal.reason());
    }
}

// ---- Cidr -----------------------------------------------------------

#[test]
fn cidr_parses_ipv4_and_ipv6_networks() {
    let v4 = cidr("10.0.0.0/8");
    assert_eq!((v4.network(), v4.prefix()), (ip("10.0.0.0"), 8));
    let v6 = cidr("2001:db8::/32");
    assert_eq!((v6.network(), v6.prefix()), (ip("2001:db8::"), 32));
    assert_eq!(cidr("0.0.0.0/0").prefix(), 0);
    assert_eq!(cidr("::/0").prefix(), 0);
}

#[test]
fn cidr_bare_address_is_a_host_route() {
    assert_eq!(cidr("192.0.2.7"), Cidr::new(ip("192.0.2.7"), 32).unwrap());
    assert_eq!(cidr("::1"), Cidr::new(ip("::1"), 128).unwrap());
    assert!(cidr("192.0.2.7").contains(ip("192.0.2.7")));
    assert!(!cidr("192.0.2.7").contains(ip("192.0.2.8")));
    assert!(!cidr("::1").contains(ip("::2")));
}

#[test]
fn cidr_zeroes_host_bits() {
    assert_eq!(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"));
    assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
    assert_eq!(cidr("2001:db8:1:2::5/33").to_string(), "2001:db8::/33");
    assert_eq!(cidr("255.255.255.255/0").to_string(), "0.0.0.0/0");
    assert_eq!(cidr("ffff::1/0").to_string(), "::/0");
}

#[test]
fn cidr_display_round_trips() {
    for text in [
        "10.0.0.0/8",
        "0.0.0.0/0",
        "203.0.113.9/32",
        "::/0",
        "::1/128",
        "fe80::/10",
    ] {
        let parsed = cidr(text);
        assert_eq!(parsed.to_string(), text);
        assert_eq!(cidr(&parsed.to_string()), parsed);
    }
}

#[test]
fn cidr_rejects_a_prefix_longer_than_the_address() {
    assert_eq!(
        "10.0.0.0/33".parse::<Cidr>(),
        Err(CidrError::PrefixTooLong { prefix: 33, max: 32 })
    );
    assert_eq!(
        "::/129".parse::<Cidr>(),
        Err(CidrError::PrefixTooLong { prefix: 129, max: 128 })
    );
    let message = CidrError::PrefixTooLong { prefix: 33, max: 32 }.to_string();
    assert!(message.contains("/33") && message.contains("IPv4"), "{message}");
}

#[test]
fn cidr_rejects_a_prefix_that_is_not_a_whole_number() {
    for text in [
        "10.0.0.0/",
        "10.0.0.0/abc",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "10.0.0.0/ 8",
        "10.0.0.0/300",
        "::/99999999999999999999",
    ] {
        match text.parse::<Cidr>() {
            Err(CidrError::InvalidPrefix { input, .. }) => assert_eq!(input, text),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let message = "10.0.0.0/x".parse::<Cidr>().unwrap_err().to_string();
    assert!(
        message.contains("10.0.0.0/x") && message.contains("0 to 32"),
        "{message}"
    );
}

#[test]
fn cidr_rejects_garbage_addresses() {
    for text in [
        "",
        "/8",
        "garbage",
        "10.0.0/8",
        "10.0.0.256/8",
        "fe80::1%eth0/64",
        " 10.0.0.0/8",
        "10.0.0.0 /8",
        "::g/64",
    ] {
        match text.parse::<Cidr>() {
            Err(CidrError::InvalidAddress { input }) => assert_eq!(input, text),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let message = "garbage".parse::<Cidr>().unwrap_err().to_string();
    assert!(message.contains("\"garbage\""), "{message}");
    let err: Box<dyn std::error::Error> = Box::new(CidrError::InvalidAddress { input: String::new() });
    assert!(!err.to_string().is_empty());
}

#[test]
fn cidr_contains_is_false_across_families() {
    assert!(!cidr("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
    assert!(!cidr("::ffff:10.0.0.0/104").contains(ip("10.0.0.1")));
    assert!(!cidr("0.0.0.0/0").contains(ip("::")));
    assert!(!cidr("::/0").contains(ip("0.0.0.0")));
    assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
    assert!(cidr("::/0").contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
}

#[test]
fn cidr_new_accepts_every_prefix_up_to_the_address_length_and_no_more() {
    for prefix in 0..=u8::MAX {
        let v4 = Cidr::new(ip("255.255.255.255"), prefix);
        let v6 = Cidr::new(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), prefix);
        assert_eq!(v4.is_ok(), prefix <= 32, "/{prefix}");
        assert_eq!(v6.is_ok(), prefix <= 128, "/{prefix}");
        if let Ok(c) = v4 {
            let IpAddr::V4(network) = c.network() else {
                panic!("{c} is not IPv4")
            };
            assert_eq!(network.to_bits().count_ones(), u32::from(prefix));
            assert!(c.contains(ip("255.255.255.255")));
            assert_eq!(c.contains(ip("0.0.0.0")), prefix == 0);
        }
        if let Ok(c) = v6 {
            assert!(c.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
            assert_eq!(c.contains(ip("::")), prefix == 0);
        }
    }
}

#[test]
fn cidr_boundaries_are_exact() {
    let c = cidr("172.16.0.0/12");
    assert!(c.contains(ip("172.16.0.0")));
    assert!(c.contains(ip("172.31.255.255")));
    assert!(!c.contains(ip("172.15.255.255")));
    assert!(!c.contains(ip("172.32.0.0")));
    let c6 = cidr("fe80::/10");
    assert!(c6.contains(ip("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(!c6.contains(ip("fec0::")));
}
