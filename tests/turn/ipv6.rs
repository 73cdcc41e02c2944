//! IPv6 relays (RFC 8656 §7.2, REQUESTED-ADDRESS-FAMILY and dual
//! allocations with ADDITIONAL-ADDRESS-FAMILY) through the real driver:
//! each family's peers are reached through that family's relay, never
//! across (443). coturn's `turnutils_uclient -x` over `[::1]` is in
//! `interop/coturn_tools.rs`.

// Black-box tests wait for conditions with real deadlines; the clock ban
// is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use crate::common::{
    authenticated_request, read_stun, tcp_connect, transaction_id, EchoPeer, TestServer, LONG_TERM_USER_TOML,
};
use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter};

const IPV4: [u8; 4] = [1, 0, 0, 0];
const IPV6: [u8; 4] = [2, 0, 0, 0];

/// Allocates over `stream` with `build` adding attributes to
/// REQUESTED-TRANSPORT; returns the answer.
fn allocate(stream: &mut TcpStream, build: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
    authenticated_request(stream, method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        build(w);
    })
}

fn relays(answer: &[u8]) -> Vec<SocketAddr> {
    let msg = Message::parse(answer).expect("a STUN answer");
    assert_eq!(msg.class(), Class::Success, "Allocate failed: {answer:02x?}");
    msg.xor_addresses(attr::XOR_RELAYED_ADDRESS)
        .map(|a| a.expect("valid relay address"))
        .collect()
}

fn error_code(answer: &[u8]) -> Option<u16> {
    let msg = Message::parse(answer).expect("a STUN answer");
    msg.get(attr::ERROR_CODE)
        .map(|v| u16::from(v[2]) * 100 + u16::from(v[3]))
}

fn create_permission(stream: &mut TcpStream, peer: SocketAddr) -> Vec<u8> {
    authenticated_request(stream, method::CREATE_PERMISSION, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer);
    })
}

/// Sends `payload` to `peer` in a Send indication and returns what comes
/// back from it in a Data indication (the echo): (peer, payload).
fn round_trip(stream: &mut TcpStream, peer: SocketAddr, payload: &[u8]) -> (SocketAddr, Vec<u8>) {
    send(stream, peer, payload);
    receive(stream)
}

/// Sends `payload` to `peer` in a Send indication.
fn send(stream: &mut TcpStream, peer: SocketAddr, payload: &[u8]) {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Indication, method::SEND, transaction_id());
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).bytes(attr::DATA, payload);
    w.finish(None, false);
    stream.write_all(&buf).expect("send indication");
}

/// The next Data indication on `stream`: (peer, payload).
fn receive(stream: &mut TcpStream) -> (SocketAddr, Vec<u8>) {
    let data = read_stun(stream);
    let msg = Message::parse(&data).expect("a Data indication");
    assert_eq!((msg.class(), msg.method()), (Class::Indication, method::DATA));
    let from = msg
        .xor_address(attr::XOR_PEER_ADDRESS)
        .expect("XOR-PEER-ADDRESS")
        .unwrap();
    (from, msg.get(attr::DATA).expect("DATA").to_vec())
}

#[test]
fn dual_allocation_relays_ipv4_and_ipv6_peers_through_their_own_relays() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let (peer4, peer6) = (EchoPeer::start(), EchoPeer::start_on("[::1]:0"));
    let mut stream = tcp_connect(server.addr());
    let answer = allocate(&mut stream, |w| {
        w.bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &IPV6);
    });
    let relays = relays(&answer);
    assert_eq!(relays.len(), 2, "one relay per family");
    assert!(relays[0].is_ipv4() && relays[0].ip().is_loopback());
    assert!(relays[1].is_ipv6() && relays[1].ip().is_loopback());
    for relay in &relays {
        assert!(server.relay_ports().contains(&relay.port()));
    }
    assert_eq!(error_code(&create_permission(&mut stream, peer4.addr())), None);
    assert_eq!(error_code(&create_permission(&mut stream, peer6.addr())), None);
    assert_eq!(
        round_trip(&mut stream, peer4.addr(), b"over IPv4"),
        (peer4.addr(), b"over IPv4".to_vec())
    );
    assert_eq!(
        round_trip(&mut stream, peer6.addr(), b"over IPv6"),
        (peer6.addr(), b"over IPv6".to_vec())
    );
    assert_eq!((peer4.received(), peer6.received()), (1, 1));
}

#[test]
fn ipv6_relay_on_an_ipv4_connection_reaches_ipv6_peers_only() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let (peer4, peer6) = (EchoPeer::start(), EchoPeer::start_on("[::1]:0"));
    let mut stream = tcp_connect(server.addr());
    let answer = allocate(&mut stream, |w| {
        w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &IPV6);
    });
    let relays = relays(&answer);
    assert!(relays.len() == 1 && relays[0].is_ipv6(), "{relays:?}");
    assert_eq!(error_code(&create_permission(&mut stream, peer4.addr())), Some(443));
    assert_eq!(error_code(&create_permission(&mut stream, peer6.addr())), None);
    assert_eq!(
        round_trip(&mut stream, peer6.addr(), b"six"),
        (peer6.addr(), b"six".to_vec())
    );
}

#[test]
fn ipv4_allocation_refuses_ipv6_peers_with_443() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let mut stream = tcp_connect(server.addr());
    let answer = allocate(&mut stream, |w| {
        w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &IPV4);
    });
    assert!(relays(&answer)[0].is_ipv4());
    let peer6 = EchoPeer::start_on("[::1]:0");
    assert_eq!(error_code(&create_permission(&mut stream, peer6.addr())), Some(443));
}

/// `server.external_ip` with an IPv6 entry (issue 20): IPv6 relays
/// advertise it, and two allocations of this server reach each other on
/// the advertised addresses, which this host never routes (a unique local
/// address no interface has): the hairpin sends them to the relays' bind
/// address (`::1`), so nothing leaves the machine. The IPv4 entry is
/// advertised by the IPv4 relay of the same dual allocation.
#[test]
fn an_ipv6_external_ip_is_advertised_and_its_relays_reach_each_other_through_it() {
    let server = TestServer::start_with("external_ip = [\"127.0.0.2\", \"fd00:7::7\"]", LONG_TERM_USER_TOML);
    let (mut a, mut b) = (tcp_connect(server.addr()), tcp_connect(server.addr()));
    let dual = relays(&allocate(&mut a, |w| {
        w.bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &IPV6);
    }));
    assert_eq!(dual[0].ip().to_string(), "127.0.0.2", "{dual:?}");
    assert_eq!(dual[1].ip().to_string(), "fd00:7::7", "{dual:?}");
    let other = relays(&allocate(&mut b, |w| {
        w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &IPV6);
    }))[0];
    assert_eq!(other.ip().to_string(), "fd00:7::7");
    assert_eq!(error_code(&create_permission(&mut a, other)), None);
    assert_eq!(error_code(&create_permission(&mut b, dual[1])), None);

    send(&mut a, other, b"across");
    assert_eq!(
        receive(&mut b),
        (dual[1], b"across".to_vec()),
        "seen as from A's advertised relay"
    );
}
