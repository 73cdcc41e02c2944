//! Malformed frames (each one passed, none dropped, none rewritten) and
//! the largest datagrams: up to the device's MTU after the rewrite, and
//! no further (the kernel then decides, as it would for user space).

use std::process::Command;
use std::time::Duration;

use turnpike::net::xdp::Verdict;

use crate::common::process::{require_tool, run_with_timeout};
use crate::fixture::{both, Fixture, DEVICE};
use crate::frames::{channel_data, data, fix_ipv4_checksum, ip_len, parse_sent, udp, ETH};

fn set_u16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn get_u16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

#[test]
fn malformed_ipv4_passes() {
    let mut x = Fixture::new();
    let f = crate::fixture::v4();
    x.install_both_ways(&f);
    let good = udp(f.client, f.server, &channel_data(0x4001, &data(64)));
    x.expect_tx(&good, Verdict::TxToPeer);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("an Ethernet header alone", good[..ETH].to_vec()),
        ("a cut IP header", good[..ETH + 12].to_vec()),
        ("a cut UDP header", good[..ETH + 24].to_vec()),
        ("the datagram cut short", good[..good.len() - 10].to_vec()),
    ];
    let mut bad_checksum = good.clone();
    bad_checksum[ETH + 10] ^= 0x40;
    cases.push(("a wrong header checksum", bad_checksum));
    let mut version = good.clone();
    version[ETH] = 0x65;
    fix_ipv4_checksum(&mut version);
    cases.push(("version 6 in an IPv4 frame", version));
    let mut short_ihl = good.clone();
    short_ihl[ETH] = 0x44;
    fix_ipv4_checksum(&mut short_ihl);
    cases.push(("a header length under 20 bytes", short_ihl));
    let mut long_total = good.clone();
    let total = get_u16(&good, ETH + 2);
    set_u16(&mut long_total, ETH + 2, total + 1);
    fix_ipv4_checksum(&mut long_total);
    cases.push(("a total length past the frame", long_total));
    let mut tiny_total = good.clone();
    set_u16(&mut tiny_total, ETH + 2, 20);
    fix_ipv4_checksum(&mut tiny_total);
    cases.push(("a total length without room for UDP", tiny_total));
    let mut udp_len = good.clone();
    let len = get_u16(&good, ETH + 24);
    set_u16(&mut udp_len, ETH + 24, len - 1);
    cases.push(("a UDP length short of the IP payload", udp_len));
    for (what, frame) in cases {
        let result = x.run(&frame);
        assert_eq!(result.action, turnpike::net::xdp::XdpAction::Pass, "{what}");
        assert!(result.frame == frame, "{what}: left as it came");
    }
    // Every one of them for being malformed, nothing forwarded.
    let verdicts = x.maps.verdicts().unwrap();
    assert_eq!(verdicts[Verdict::PassMalformed as usize], 10);
    assert_eq!(verdicts[Verdict::TxToPeer as usize], 1);
}

#[test]
fn malformed_ipv6_passes() {
    let mut x = Fixture::new();
    let f = crate::fixture::v6();
    x.install_both_ways(&f);
    let good = udp(f.client, f.server, &channel_data(0x4001, &data(64)));
    x.expect_tx(&good, Verdict::TxToPeer);
    let mut version = good.clone();
    version[ETH] = 0x40;
    x.expect_pass(&version, Verdict::PassMalformed);
    x.expect_pass(&good[..ETH + 30], Verdict::PassMalformed);
    x.expect_pass(&good[..ETH + 44], Verdict::PassMalformed);
    x.expect_pass(&good[..good.len() - 1], Verdict::PassMalformed);
    let mut long_payload = good.clone();
    let plen = get_u16(&good, ETH + 4);
    set_u16(&mut long_payload, ETH + 4, plen + 2);
    x.expect_pass(&long_payload, Verdict::PassMalformed);
    let mut udp_len = good.clone();
    set_u16(&mut udp_len, ETH + 44, plen - 2);
    x.expect_pass(&udp_len, Verdict::PassMalformed);
    // A jumbogram's zero payload length (RFC 2675) is not ours either.
    let mut jumbo = good.clone();
    set_u16(&mut jumbo, ETH + 4, 0);
    x.expect_pass(&jumbo, Verdict::PassMalformed);
}

#[test]
fn ethernet_padding_after_a_small_datagram_is_no_part_of_it() {
    // Frames under 60 bytes arrive padded; the IP length is what counts.
    let mut x = Fixture::new();
    let f = crate::fixture::v4();
    x.install_both_ways(&f);
    let mut frame = udp(f.client, f.server, &channel_data(0x4001, b"hi"));
    assert!(frame.len() < 60);
    frame.resize(60, 0xAA);
    let sent = parse_sent(&x.expect_tx(&frame, Verdict::TxToPeer));
    assert_eq!(sent.payload, b"hi");
    let mut from_peer = udp(f.peer, f.relay, b"yo");
    from_peer.resize(60, 0xAA);
    let sent = parse_sent(&x.expect_tx(&from_peer, Verdict::TxToClient));
    assert_eq!(sent.payload, channel_data(0x4001, b"yo"));
}

#[test]
fn datagrams_up_to_the_mtu_are_forwarded_and_larger_ones_passed() {
    let mut x = Fixture::new();
    for f in both() {
        x.install_both_ways(&f);
        // The device's MTU is 1500: the largest IP packet out is 1500.
        let room = 1500 - ip_len(f.server.is_ipv6()) - 8;
        // A client's largest ChannelData (the IP packet in is 1500) and the
        // peer's largest datagram that still fits once framed.
        let largest = udp(f.client, f.server, &channel_data(0x4001, &data(room - 4)));
        assert_eq!(largest.len(), ETH + 1500);
        let sent = parse_sent(&x.expect_tx(&largest, Verdict::TxToPeer));
        assert_eq!(sent.payload, data(room - 4));
        let from_peer = udp(f.peer, f.relay, &data(room - 4));
        let sent = parse_sent(&x.expect_tx(&from_peer, Verdict::TxToClient));
        assert_eq!(sent.payload.len(), room);
        // Four bytes more and the framed datagram would exceed the MTU:
        // the kernel's path (fragmentation or an error) is user space's.
        x.expect_pass(&udp(f.peer, f.relay, &data(room)), Verdict::PassFib);
    }
}

#[test]
fn the_largest_frame_of_one_buffer_is_forwarded_on_a_jumbo_mtu() {
    // A test run holds a frame in one page (its headroom and tail taken
    // off); with a 9000-byte MTU the largest such datagram goes through.
    let mut x = Fixture::new();
    let out = run_with_timeout(
        Command::new(require_tool("ip")).args(["link", "set", DEVICE, "mtu", "9000"]),
        Duration::from_secs(10),
    );
    assert!(out.success(), "set the MTU: {}", out.combined());
    for f in both() {
        x.install_both_ways(&f);
        let size = LARGEST_FRAME - ETH - ip_len(f.server.is_ipv6()) - 8 - 4;
        let frame = udp(f.client, f.server, &channel_data(0x4001, &data(size)));
        assert_eq!(frame.len(), LARGEST_FRAME);
        let sent = parse_sent(&x.expect_tx(&frame, Verdict::TxToPeer));
        assert_eq!(sent.payload, data(size));
        let from_peer = udp(f.peer, f.relay, &data(size));
        let sent = parse_sent(&x.expect_tx(&from_peer, Verdict::TxToClient));
        assert_eq!(sent.payload, channel_data(0x4001, &data(size)));
        // One byte more goes to a second buffer, which this program does
        // not read: what it sees is cut short of the IP length, and passes.
        let frame = udp(f.client, f.server, &channel_data(0x4001, &data(size + 1)));
        x.expect_pass(&frame, Verdict::PassMalformed);
    }
}

/// The largest frame `BPF_PROG_TEST_RUN` gives a program in one buffer
/// on 4 KiB pages: 4096 bytes less the 256 of XDP headroom and the 320 of
/// `struct skb_shared_info` behind.
const LARGEST_FRAME: usize = 3520;
