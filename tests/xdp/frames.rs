//! Frames in and out: built with `etherparse`'s packet builder (its own
//! checksums), and read back with its parser, every header field and both
//! checksums checked, the UDP one twice: against `etherparse`'s and by an
//! RFC 1071 sum written here.

use std::net::{IpAddr, SocketAddr};

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TransportHeader};

use crate::fixture::{DEVICE_MAC, GATEWAY_MAC, RECEIVED_HOPS};

/// A payload of `len` bytes that is not all one value.
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// A ChannelData message (RFC 8656 §12.4), unpadded.
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = channel.to_be_bytes().to_vec();
    out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn builder(src: IpAddr, dst: IpAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    let eth = PacketBuilder::ethernet2(GATEWAY_MAC, DEVICE_MAC);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), RECEIVED_HOPS),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), RECEIVED_HOPS),
        _ => panic!("one family per frame"),
    }
}

/// An Ethernet frame from the gateway to the device: a UDP datagram
/// from `src` to `dst`, checksummed.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let builder = builder(src.ip(), dst.ip()).udp(src.port(), dst.port());
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("build a UDP frame");
    frame
}

/// The same with a TCP segment.
pub fn tcp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let builder = builder(src.ip(), dst.ip()).tcp(src.port(), dst.port(), 1, 65535);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("build a TCP frame");
    frame
}

/// Where a frame's parts start (no VLAN, no options).
pub const ETH: usize = 14;
pub fn ip_len(v6: bool) -> usize {
    if v6 {
        40
    } else {
        20
    }
}

/// Writes the IPv4 header checksum of `frame` anew (after a test edits
/// the header).
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[ETH] & 0xF) * 4;
    frame[ETH + 10..ETH + 12].fill(0);
    let sum = !fold(sum_words(&frame[ETH..ETH + ihl], 0));
    frame[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
}

/// RFC 1071: the one's complement sum of big-endian 16-bit words, an odd
/// last byte padded with zero.
fn sum_words(bytes: &[u8], mut acc: u64) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// RFC 768 / RFC 8200 §8.1: a UDP datagram with its checksum in place
/// sums, with its pseudo-header, to all ones.
fn udp_checksum_holds(src: IpAddr, dst: IpAddr, datagram: &[u8]) -> bool {
    let mut acc = 0;
    for ip in [src, dst] {
        acc = match ip {
            IpAddr::V4(v4) => sum_words(&v4.octets(), acc),
            IpAddr::V6(v6) => sum_words(&v6.octets(), acc),
        };
    }
    acc += 17 + datagram.len() as u64;
    fold(sum_words(datagram, acc)) == 0xFFFF
}

/// A frame the program sent, read back: every header checked to be what
/// a Linux UDP socket would have sent, both checksums right.
#[derive(Debug, PartialEq, Eq)]
pub struct Sent {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// TTL or hop limit.
    pub hops: u8,
    pub payload: Vec<u8>,
}

pub fn parse_sent(frame: &[u8]) -> Sent {
    let headers = PacketHeaders::from_ethernet_slice(frame).expect("an Ethernet frame etherparse reads");
    let eth = headers.link.clone().and_then(|l| l.ethernet2()).expect("Ethernet II");
    assert!(headers.link_exts.is_empty(), "no VLAN");
    let Some(TransportHeader::Udp(udp)) = headers.transport.clone() else {
        panic!("not UDP: {:?}", headers.transport);
    };
    let PayloadSlice::Udp(payload) = headers.payload else {
        panic!("no UDP payload");
    };
    assert_eq!(usize::from(udp.length), payload.len() + 8, "UDP length");
    let (src_ip, dst_ip, hops) = match headers.net.as_ref().expect("an IP header") {
        NetHeaders::Ipv4(ip, exts) => {
            assert!(exts.is_empty() && ip.options.is_empty(), "no IPv4 options");
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IPv4 header checksum");
            assert_eq!(
                (ip.dscp.value(), ip.ecn.value()),
                (0, 0),
                "DSCP and ECN as a socket sends them"
            );
            assert!(ip.dont_fragment && !ip.more_fragments, "DF set, not a fragment");
            assert_eq!(ip.fragment_offset.value(), 0);
            assert_eq!(
                ip.identification, 0,
                "ID 0: an unfragmentable datagram's ID means nothing (RFC 6864 §4.1)"
            );
            assert_eq!(usize::from(ip.total_len), 20 + 8 + payload.len(), "IPv4 total length");
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv4(ip, payload).unwrap(),
                "UDP checksum (etherparse)"
            );
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), ip.time_to_live)
        }
        NetHeaders::Ipv6(ip, exts) => {
            assert!(exts.is_empty(), "no IPv6 extension headers");
            assert_eq!(ip.traffic_class, 0, "traffic class as a socket sends it");
            assert_eq!(ip.flow_label.value(), 0, "flow label");
            assert_eq!(usize::from(ip.payload_length), 8 + payload.len(), "IPv6 payload length");
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv6(ip, payload).unwrap(),
                "UDP checksum (etherparse)"
            );
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), ip.hop_limit)
        }
        NetHeaders::Arp(_) => panic!("ARP"),
    };
    assert_ne!(udp.checksum, 0, "a relayed datagram carries a checksum");
    let ip_start = ETH + ip_len(src_ip.is_ipv6());
    let datagram = &frame[ip_start..ip_start + usize::from(udp.length)];
    assert!(
        udp_checksum_holds(src_ip, dst_ip, datagram),
        "UDP checksum (RFC 1071 sum)"
    );
    Sent {
        eth_dst: eth.destination,
        eth_src: eth.source,
        src: SocketAddr::new(src_ip, udp.source_port),
        dst: SocketAddr::new(dst_ip, udp.destination_port),
        hops,
        payload: payload.to_vec(),
    }
}

#[test]
fn the_checksum_check_here_can_fail() {
    // A frame built right sums to all ones; the same with one payload bit
    // flipped does not, and etherparse's checksum disagrees too.
    let src = IpAddr::from([198, 51, 100, 7]);
    let dst = IpAddr::from([192, 0, 2, 1]);
    let mut frame = udp(SocketAddr::new(src, 9000), SocketAddr::new(dst, 49152), &data(101));
    assert!(udp_checksum_holds(src, dst, &frame[ETH + 20..]));
    let last = frame.len() - 1;
    frame[last] ^= 1;
    assert!(!udp_checksum_holds(src, dst, &frame[ETH + 20..]));
    let headers = PacketHeaders::from_ethernet_slice(&frame).unwrap();
    let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(udp)), PayloadSlice::Udp(payload)) =
        (headers.net, headers.transport, headers.payload)
    else {
        panic!("a UDP frame");
    };
    assert_ne!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
}
