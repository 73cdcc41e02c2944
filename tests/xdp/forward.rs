//! The three paths the program forwards, IPv4 and IPv6: a client's
//! ChannelData to its peer, a peer's datagram to the client as
//! ChannelData, and relay ↔ relay; what goes out read back by an
//! independent parser, and each route's counters.

use turnpike::net::xdp::{ChannelRoute, Counts, Outgoing, PeerRoute, Verdict};

use crate::fixture::{both, in_an_hour, Family, Fixture, DEVICE_MAC, GATEWAY_MAC, HOP_LIMIT, TTL};
use crate::frames::{channel_data, data, parse_sent, udp, Sent};

/// Sizes of application data: empty, odd and even (the checksum's odd
/// byte), and a typical media packet.
const SIZES: [usize; 8] = [0, 1, 2, 3, 100, 101, 1199, 1200];

fn hops(f: &Family) -> u8 {
    if f.server.is_ipv6() {
        HOP_LIMIT
    } else {
        TTL
    }
}

fn client_route(f: &Family, channel: u16) -> ChannelRoute {
    ChannelRoute {
        client: f.client,
        server: f.server,
        channel,
    }
}

/// The route of the client's ChannelData on 0x4001 to its peer, installed.
fn install_to_peer(x: &mut Fixture, f: &Family) -> ChannelRoute {
    let route = client_route(f, 0x4001);
    let out = Outgoing::ToPeer {
        relay: f.relay,
        peer: f.peer,
    };
    x.maps.install_channel(route, out, in_an_hour()).unwrap();
    route
}

#[test]
fn a_clients_channel_data_goes_to_its_peer_from_the_relayed_address() {
    let mut x = Fixture::new();
    for f in both() {
        let route = install_to_peer(&mut x, &f);
        let mut expected = Counts::default();
        for size in SIZES {
            let frame = udp(f.client, f.server, &channel_data(0x4001, &data(size)));
            let sent = x.expect_tx(&frame, Verdict::TxToPeer);
            assert_eq!(
                parse_sent(&sent),
                Sent {
                    eth_dst: GATEWAY_MAC,
                    eth_src: DEVICE_MAC,
                    src: f.relay,
                    dst: f.peer,
                    hops: hops(&f),
                    payload: data(size),
                },
                "{size} bytes"
            );
            assert_eq!(sent.len(), frame.len() - 4, "the header stripped, nothing else left");
            expected.packets += 1;
            expected.bytes += size as u64;
        }
        assert_eq!(x.maps.channel_counts(&route).unwrap(), expected);
    }
}

/// Over UDP a client may pad ChannelData to 4 bytes (RFC 8656 §12.5):
/// relayed without the padding, whatever its bytes (they leave the
/// checksum with it), as user space relays it.
#[test]
fn padded_channel_data_goes_to_its_peer_without_the_padding() {
    let mut x = Fixture::new();
    for f in both() {
        install_to_peer(&mut x, &f);
        for size in [1, 2, 3, 101, 1198, 1199] {
            for fill in [0x00, 0xA5, 0xFF] {
                let mut message = channel_data(0x4001, &data(size));
                message.resize(message.len().next_multiple_of(4), fill);
                let sent = x.expect_tx(&udp(f.client, f.server, &message), Verdict::TxToPeer);
                let parsed = parse_sent(&sent);
                assert_eq!(
                    (parsed.src, parsed.dst),
                    (f.relay, f.peer),
                    "{size} bytes, fill {fill:#x}"
                );
                assert_eq!(parsed.payload, data(size), "{size} bytes, fill {fill:#x}");
            }
        }
    }
}

#[test]
fn a_peers_datagram_reaches_the_client_as_channel_data() {
    let mut x = Fixture::new();
    for f in both() {
        let route = PeerRoute {
            relay: f.relay,
            peer: f.peer,
        };
        let out = Outgoing::ToClient {
            server: f.server,
            client: f.client,
            channel: 0x7FFF,
        };
        x.maps.install_peer(route, out, in_an_hour()).unwrap();
        let mut expected = Counts::default();
        // A peer's bytes are opaque: data that looks like ChannelData or
        // STUN is framed the same.
        let looks_like_protocol = [vec![0x40, 0x01, 0x00, 0x00], vec![0x00, 0x01, 0x00, 0x00]];
        for payload in SIZES.map(data).into_iter().chain(looks_like_protocol) {
            let frame = udp(f.peer, f.relay, &payload);
            let sent = x.expect_tx(&frame, Verdict::TxToClient);
            assert_eq!(
                parse_sent(&sent),
                Sent {
                    eth_dst: GATEWAY_MAC,
                    eth_src: DEVICE_MAC,
                    src: f.server,
                    dst: f.client,
                    hops: hops(&f),
                    payload: channel_data(0x7FFF, &payload),
                },
                "{} bytes",
                payload.len()
            );
            assert_eq!(sent.len(), frame.len() + 4);
            expected.packets += 1;
            expected.bytes += payload.len() as u64;
        }
        assert_eq!(x.maps.peer_counts(&route).unwrap(), expected);
    }
}

#[test]
fn relay_to_relay_is_one_rewrite_straight_to_the_other_client() {
    // Client A's channel 0x4001 names allocation B's relayed address, and
    // B's channel 0x4ABC names A's: A's ChannelData goes to B's client on
    // B's channel, from the server's address, without touching a relay.
    let mut x = Fixture::new();
    for f in both() {
        let route = client_route(&f, 0x4001);
        let out = Outgoing::ToClient {
            server: f.server,
            client: f.other_client,
            channel: 0x4ABC,
        };
        x.maps.install_channel(route, out, in_an_hour()).unwrap();
        for size in SIZES {
            let frame = udp(f.client, f.server, &channel_data(0x4001, &data(size)));
            let sent = x.expect_tx(&frame, Verdict::TxRelayToRelay);
            assert_eq!(
                parse_sent(&sent),
                Sent {
                    eth_dst: GATEWAY_MAC,
                    eth_src: DEVICE_MAC,
                    src: f.server,
                    dst: f.other_client,
                    hops: hops(&f),
                    payload: channel_data(0x4ABC, &data(size)),
                }
            );
            assert_eq!(sent.len(), frame.len());
        }
        let total = SIZES.iter().sum::<usize>() as u64;
        assert_eq!(
            x.maps.channel_counts(&route).unwrap(),
            Counts {
                packets: SIZES.len() as u64,
                bytes: total
            }
        );
    }
}

#[test]
fn a_refresh_keeps_the_counts_and_a_removal_returns_them_and_stops_forwarding() {
    let mut x = Fixture::new();
    for f in both() {
        let route = client_route(&f, 0x4002);
        let out = Outgoing::ToPeer {
            relay: f.relay,
            peer: f.peer,
        };
        let frame = udp(f.client, f.server, &channel_data(0x4002, &data(40)));
        x.maps.install_channel(route, out, in_an_hour()).unwrap();
        x.expect_tx(&frame, Verdict::TxToPeer);
        x.maps.install_channel(route, out, in_an_hour()).unwrap();
        x.expect_tx(&frame, Verdict::TxToPeer);
        let two = Counts { packets: 2, bytes: 80 };
        assert_eq!(x.maps.channel_counts(&route).unwrap(), two);
        assert_eq!(x.maps.remove_channel(&route).unwrap(), two);
        x.expect_pass(&frame, Verdict::PassNoRoute);
        assert!(
            x.maps.channel_counts(&route).is_err(),
            "no counts for a route that is gone"
        );
        // Installed again, it counts from zero.
        x.maps.install_channel(route, out, in_an_hour()).unwrap();
        x.expect_tx(&frame, Verdict::TxToPeer);
        assert_eq!(x.maps.remove_channel(&route).unwrap(), Counts { packets: 1, bytes: 40 });

        let peer = PeerRoute {
            relay: f.relay,
            peer: f.peer,
        };
        let back = Outgoing::ToClient {
            server: f.server,
            client: f.client,
            channel: 0x4002,
        };
        let from_peer = udp(f.peer, f.relay, &data(9));
        x.maps.install_peer(peer, back, in_an_hour()).unwrap();
        x.expect_tx(&from_peer, Verdict::TxToClient);
        assert_eq!(x.maps.remove_peer(&peer).unwrap(), Counts { packets: 1, bytes: 9 });
        x.expect_pass(&from_peer, Verdict::PassNotChannel);
    }
    assert!(x.maps.is_empty());
}

#[test]
fn routes_of_one_client_are_told_apart_by_channel_and_five_tuple() {
    let mut x = Fixture::new();
    for f in both() {
        let to_peer = Outgoing::ToPeer {
            relay: f.relay,
            peer: f.peer,
        };
        let to_other = Outgoing::ToPeer {
            relay: f.other_relay,
            peer: f.peer,
        };
        x.maps
            .install_channel(client_route(&f, 0x4001), to_peer, in_an_hour())
            .unwrap();
        x.maps
            .install_channel(client_route(&f, 0x4002), to_other, in_an_hour())
            .unwrap();
        let first = x.expect_tx(
            &udp(f.client, f.server, &channel_data(0x4001, b"one")),
            Verdict::TxToPeer,
        );
        let second = x.expect_tx(
            &udp(f.client, f.server, &channel_data(0x4002, b"two")),
            Verdict::TxToPeer,
        );
        assert_eq!(parse_sent(&first).src, f.relay);
        assert_eq!(parse_sent(&second).src, f.other_relay);
        // Another port of the client's, another port of the server's:
        // other 5-tuples, no route.
        let mut other_port = f.client;
        other_port.set_port(f.client.port() + 1);
        x.expect_pass(
            &udp(other_port, f.server, &channel_data(0x4001, b"one")),
            Verdict::PassNoRoute,
        );
        let mut other_listener = f.server;
        other_listener.set_port(f.server.port() + 1);
        x.expect_pass(
            &udp(f.client, other_listener, &channel_data(0x4001, b"one")),
            Verdict::PassNoRoute,
        );
    }
}
