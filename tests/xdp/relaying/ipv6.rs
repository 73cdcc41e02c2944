//! IPv6 through a running server: a client on fd21::2 allocates an IPv6
//! relay (REQUESTED-ADDRESS-FAMILY, RFC 8656 §7.2) on fd21::1 and binds a
//! channel to a peer on fd21::3; the program relays both ways
//! (`tx_to_peer`, `tx_to_client`), the payloads arrive intact, the relayed
//! totals count them, and the peer gets them with the host's hop limit
//! (RFC 8656 §14's "alternate" behaviour, what a socket of the server
//! would give them: `tpx-s`'s [`HOP_LIMIT`], not the 64 they came in
//! with).
//!
//! An IPv4 client with an IPv6 relay translates between the families
//! (RFC 6156), which the program does not do: it gets no route, the
//! program passes both ways, and user space relays, with the same hop
//! limit.

use std::mem::{size_of, size_of_val};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use crate::topology::{Topology, CLIENT, CLIENT6, HOP_LIMIT, PEER6};

use super::{deleted_counts, start, wait_moved, wait_relayed, wait_routes, Call, Setup, Verdicts};
use crate::common::turn_client::Source;

/// Has `socket` (IPv6) report the hop limit of each datagram it receives
/// (`IPV6_RECVHOPLIMIT`, RFC 3542 §6.3).
fn report_hop_limits(socket: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: an int option of the size given, on a socket we hold.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IPV6_RECVHOPLIMIT: {}", std::io::Error::last_os_error());
}

/// The next datagram on `socket` (of [`report_hop_limits`]) within its
/// read timeout: payload, sender and hop limit.
fn recv_with_hop_limit(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr, u8)> {
    let mut buf = [0u8; 2048];
    // SAFETY (the zeroed values): plain C structs, all zeroes valid.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    // Room for a few control messages, aligned as cmsghdr needs.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `msg` points at a live buffer of the
    // length given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return None;
    }
    let mut hop_limit = None;
    // SAFETY: the kernel filled `control` up to `msg_controllen`; the
    // macros walk it within that length.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
        if (level, kind) == (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) {
            hop_limit = Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) });
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
    let hop_limit = hop_limit.expect("no IPV6_HOPLIMIT control message");
    let from = SocketAddrV6::new(
        Ipv6Addr::from(from.sin6_addr.s6_addr),
        u16::from_be(from.sin6_port),
        0,
        0,
    );
    Some((
        buf[..n as usize].to_vec(),
        from.into(),
        u8::try_from(hop_limit).expect("a hop limit of 0 to 255"),
    ))
}

/// ChannelData with `payload` from the call's client; what its peer got:
/// payload, from where, with which hop limit.
fn to_peer_with_hop_limit(call: &mut Call, payload: &[u8]) -> Option<(Vec<u8>, SocketAddr, u8)> {
    call.client.channel_data(call.channel, payload);
    recv_with_hop_limit(&call.peer)
}

#[test]
fn an_ipv6_channel_is_relayed_by_the_program_both_ways_with_the_hosts_hop_limit() {
    let topology = Topology::for_the_fast_path();
    let server = start(&Setup::default());
    let mut call = Call::open_between(&server, &topology.far, CLIENT6, PEER6);
    report_hop_limits(&call.peer);
    // 18 bytes to the peer and 24 back, each a tx verdict.
    call.prove_fast_path(&server);
    wait_relayed(&server, (1.0, 18.0), (1.0, 24.0));

    let before = Verdicts::of(&server);
    assert_eq!(
        to_peer_with_hop_limit(&mut call, b"hop limit"),
        Some((b"hop limit".to_vec(), call.relayed, HOP_LIMIT)),
        "what the peer got, from where, with which hop limit"
    );
    let expected = Verdicts::of_pairs(&[("tx_to_peer", 1)]);
    let moved = wait_moved(&server, &before, |m| m.tx_only() == expected);
    assert_eq!(moved.tx_only(), expected, "the program sent it: moved {moved:?}");

    assert_eq!(call.client.delete_allocation(), Ok(()), "Refresh 0");
    assert_eq!(deleted_counts(&server, call.relayed), [2, 27, 1, 24]);
}

#[test]
fn an_ipv4_client_with_an_ipv6_relay_is_relayed_in_user_space() {
    let topology = Topology::for_the_fast_path();
    let server = start(&Setup::default());
    let mut call = Call::open_between(&server, &topology.far, CLIENT, PEER6);
    report_hop_limits(&call.peer);
    wait_routes(&server, 0.0, Some(0.0));

    let before = Verdicts::of(&server);
    assert_eq!(
        to_peer_with_hop_limit(&mut call, b"from IPv4"),
        Some((b"from IPv4".to_vec(), call.relayed, HOP_LIMIT)),
        "what the peer got, from where, with which hop limit"
    );
    let got = call.send_to_client(b"#to IPv4", std::time::Duration::from_secs(5));
    assert_eq!(
        got,
        [(Source::Channel(call.channel), b"#to IPv4".to_vec())],
        "the client's datagram"
    );
    // The client's ChannelData on no route, the peer's datagram from no
    // routed peer (and not ChannelData).
    let passed = ["pass_no_route", "pass_not_channel"];
    let moved = wait_moved(&server, &before, |m| m.sum(&passed) >= 2);
    assert_eq!(
        (moved.get(passed[0]), moved.get(passed[1]), moved.tx()),
        (1, 1, 0),
        "moved {moved:?}"
    );
    wait_relayed(&server, (1.0, 9.0), (1.0, 8.0));
}
