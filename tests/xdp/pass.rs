//! What the program does not own goes to the kernel untouched
//! (`XDP_PASS`, never a drop), each for its own reason: the verdict
//! counters say which, so a case cannot pass for the wrong one.

use turnpike::net::xdp::{ChannelRoute, Outgoing, PeerRoute, Verdict};

use crate::fixture::{both, in_an_hour, monotonic_ns, sysctl, Fixture, DEVICE, GATEWAY_MAC};
use crate::frames::{channel_data, data, fix_ipv4_checksum, ip_len, tcp, udp, ETH};

/// A STUN message of `message_type` with a fixed
/// transaction id and `attributes` (RFC 8489 §5).
fn stun(message_type: u16, attributes: &[u8]) -> Vec<u8> {
    let mut out = message_type.to_be_bytes().to_vec();
    out.extend_from_slice(&u16::try_from(attributes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    out.extend_from_slice(&[7; 12]);
    out.extend_from_slice(attributes);
    out
}

#[test]
fn a_channel_without_a_route_passes() {
    let mut x = Fixture::new();
    for f in both() {
        let frame = udp(f.client, f.server, &channel_data(0x4001, &data(20)));
        x.expect_pass(&frame, Verdict::PassNoRoute);
        x.install_both_ways(&f);
        x.expect_pass(
            &udp(f.client, f.server, &channel_data(0x4002, &data(20))),
            Verdict::PassNoRoute,
        );
        // Too short to be ChannelData at all.
        x.expect_pass(&udp(f.client, f.server, &[0x40, 0x01, 0x00]), Verdict::PassNoRoute);
    }
}

#[test]
fn stun_and_indications_pass() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
        // A Binding request, a Send indication (XOR-PEER-ADDRESS and DATA
        // attributes), a Data indication, and an empty datagram, all on the
        // client's 5-tuple, which has a channel route.
        let binding = stun(0x0001, &[]);
        let mut send_attributes = vec![0x00, 0x12, 0x00, 0x08, 0x00, 0x01, 0x03, 0x2a, 0xe1, 0x12, 0xa6, 0x45];
        send_attributes.extend_from_slice(&[0x00, 0x13, 0x00, 0x04, 1, 2, 3, 4]);
        let send = stun(0x0016, &send_attributes);
        let data_indication = stun(0x0017, &send_attributes);
        for payload in [binding, send, data_indication, Vec::new()] {
            x.expect_pass(&udp(f.client, f.server, &payload), Verdict::PassNotChannel);
        }
    }
}

#[test]
fn channel_data_of_another_length_than_its_own_or_padded_passes() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
        // Padded beyond the next multiple of 4.
        let mut overlong = channel_data(0x4001, &data(101));
        overlong.extend_from_slice(&[0; 7]);
        x.expect_pass(&udp(f.client, f.server, &overlong), Verdict::PassChannelLength);
        let mut four_more = channel_data(0x4001, &data(100));
        four_more.extend_from_slice(&[0; 4]);
        x.expect_pass(&udp(f.client, f.server, &four_more), Verdict::PassChannelLength);
        let mut truncated = channel_data(0x4001, &data(100));
        truncated.truncate(90);
        x.expect_pass(&udp(f.client, f.server, &truncated), Verdict::PassChannelLength);
        x.expect_pass(
            &udp(f.client, f.server, &[0x40, 0x01, 0x00, 0x01]),
            Verdict::PassChannelLength,
        );
    }
}

#[test]
fn a_peer_without_a_route_passes() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
        // Another port of the peer's, and another relayed address: no
        // route (permissions and channels are per peer address).
        let mut other_port = f.peer;
        other_port.set_port(f.peer.port() + 1);
        x.expect_pass(&udp(other_port, f.relay, &data(30)), Verdict::PassNotChannel);
        x.expect_pass(&udp(f.peer, f.other_relay, &data(30)), Verdict::PassNotChannel);
    }
}

#[test]
fn ip_options_extension_headers_and_fragments_pass() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
    }
    let f = crate::fixture::v4();
    let frame = udp(f.client, f.server, &channel_data(0x4001, &data(64)));
    // IPv4 options: 4 bytes of NOP, the header 24 bytes long.
    let mut options = frame.clone();
    options.splice(ETH + 20..ETH + 20, [1, 1, 1, 1]);
    options[ETH] = 0x46;
    let total = u16::from_be_bytes([options[ETH + 2], options[ETH + 3]]) + 4;
    options[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut options);
    x.expect_pass(&options, Verdict::PassIpOptions);
    // A first fragment (MF), and a later one (an offset).
    for flags_and_offset in [0x2000u16, 0x0010] {
        let mut fragment = frame.clone();
        fragment[ETH + 6..ETH + 8].copy_from_slice(&flags_and_offset.to_be_bytes());
        fix_ipv4_checksum(&mut fragment);
        x.expect_pass(&fragment, Verdict::PassFragment);
    }

    let f = crate::fixture::v6();
    let frame = udp(f.client, f.server, &channel_data(0x4001, &data(64)));
    let with_extension = |next: u8, extension: [u8; 8]| {
        let mut out = frame.clone();
        out[ETH + 6] = next;
        out.splice(ETH + 40..ETH + 40, extension);
        let len = u16::from_be_bytes([out[ETH + 4], out[ETH + 5]]) + 8;
        out[ETH + 4..ETH + 6].copy_from_slice(&len.to_be_bytes());
        out
    };
    // Hop-by-hop options (a PadN), then UDP.
    let hop_by_hop = with_extension(0, [17, 0, 1, 4, 0, 0, 0, 0]);
    x.expect_pass(&hop_by_hop, Verdict::PassIpOptions);
    // A fragment header: offset 0, more fragments.
    let fragment = with_extension(44, [17, 0, 0, 1, 0, 0, 0, 9]);
    x.expect_pass(&fragment, Verdict::PassFragment);
}

#[test]
fn tcp_icmp_and_non_ip_pass() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
        // A TCP or TLS client's bytes on the same addresses and ports.
        x.expect_pass(
            &tcp(f.client, f.server, &channel_data(0x4001, &data(40))),
            Verdict::PassNotUdp,
        );
        x.expect_pass(&tcp(f.peer, f.relay, &data(40)), Verdict::PassNotUdp);
        // ICMP: protocol 1 in the IPv4 header, next header 58 in IPv6.
        let mut icmp = udp(f.client, f.server, &data(16));
        if f.server.is_ipv6() {
            icmp[ETH + 6] = 58;
        } else {
            icmp[ETH + 9] = 1;
            fix_ipv4_checksum(&mut icmp);
        }
        x.expect_pass(&icmp, Verdict::PassNotUdp);
        // An 802.1Q tag in front of the same datagram.
        let mut tagged = udp(f.client, f.server, &channel_data(0x4001, &data(40)));
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        x.expect_pass(&tagged, Verdict::PassNotIp);
    }
    // ARP.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&GATEWAY_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    x.expect_pass(&arp, Verdict::PassNotIp);
}

#[test]
fn a_datagram_without_udp_checksum_passes() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
        let mut frame = udp(f.client, f.server, &channel_data(0x4001, &data(40)));
        let check = ETH + ip_len(f.server.is_ipv6()) + 6;
        frame[check..check + 2].fill(0);
        x.expect_pass(&frame, Verdict::PassNoChecksum);
    }
}

#[test]
fn an_expired_route_passes() {
    let mut x = Fixture::new();
    for f in both() {
        let past = monotonic_ns();
        let channel = ChannelRoute {
            client: f.client,
            server: f.server,
            channel: 0x4001,
        };
        let to_peer = Outgoing::ToPeer {
            relay: f.relay,
            peer: f.peer,
        };
        x.maps.install_channel(channel, to_peer, past).unwrap();
        let from_client = udp(f.client, f.server, &channel_data(0x4001, &data(40)));
        x.expect_pass(&from_client, Verdict::PassExpired);
        let peer = PeerRoute {
            relay: f.relay,
            peer: f.peer,
        };
        let to_client = Outgoing::ToClient {
            server: f.server,
            client: f.client,
            channel: 0x4001,
        };
        x.maps.install_peer(peer, to_client, past).unwrap();
        let from_peer = udp(f.peer, f.relay, &data(40));
        x.expect_pass(&from_peer, Verdict::PassExpired);
        // A refresh with a later expiry revives them.
        x.maps.install_channel(channel, to_peer, in_an_hour()).unwrap();
        x.maps.install_peer(peer, to_client, in_an_hour()).unwrap();
        x.expect_tx(&from_client, Verdict::TxToPeer);
        x.expect_tx(&from_peer, Verdict::TxToClient);
    }
}

#[test]
fn nothing_is_forwarded_before_the_ttl_and_hop_limit_are_set() {
    let mut x = Fixture::unconfigured();
    for f in both() {
        x.install_both_ways(&f);
        x.expect_pass(
            &udp(f.client, f.server, &channel_data(0x4001, &data(40))),
            Verdict::PassUnconfigured,
        );
        x.expect_pass(&udp(f.peer, f.relay, &data(40)), Verdict::PassUnconfigured);
    }
}

#[test]
fn a_frame_for_another_mac_passes() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
        let mut frame = udp(f.client, f.server, &channel_data(0x4001, &data(40)));
        frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x77]);
        x.expect_pass(&frame, Verdict::PassNotForUs);
    }
}

#[test]
fn where_the_kernel_would_route_otherwise_the_frame_passes() {
    let mut x = Fixture::new();
    for f in both() {
        let install = |x: &mut Fixture, peer| {
            let channel = ChannelRoute {
                client: f.client,
                server: f.server,
                channel: 0x4001,
            };
            let out = Outgoing::ToPeer { relay: f.relay, peer };
            x.maps.install_channel(channel, out, in_an_hour()).unwrap();
        };
        let frame = udp(f.client, f.server, &channel_data(0x4001, &data(40)));
        // The next hop has no neighbour entry: the kernel resolves it.
        install(&mut x, f.unresolved_peer);
        x.expect_pass(&frame, Verdict::PassFib);
        // The peer is reached through another device.
        install(&mut x, f.elsewhere_peer);
        x.expect_pass(&frame, Verdict::PassFib);
        // Back to a peer behind the gateway of the ingress device.
        install(&mut x, f.peer);
        x.expect_tx(&frame, Verdict::TxToPeer);
    }
}

#[test]
fn with_forwarding_off_on_the_device_nothing_is_forwarded() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
    }
    let f = crate::fixture::v4();
    let frame = udp(f.client, f.server, &channel_data(0x4001, &data(40)));
    x.expect_tx(&frame, Verdict::TxToPeer);
    sysctl(&format!("net/ipv4/conf/{DEVICE}/forwarding"), "0");
    x.expect_pass(&frame, Verdict::PassFib);

    let f = crate::fixture::v6();
    let frame = udp(f.client, f.server, &channel_data(0x4001, &data(40)));
    x.expect_tx(&frame, Verdict::TxToPeer);
    sysctl("net/ipv6/conf/all/forwarding", "0");
    x.expect_pass(&frame, Verdict::PassFib);
}
