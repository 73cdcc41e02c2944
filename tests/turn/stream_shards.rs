//! TCP and TLS on every shard, black-box, with `server.workers = 4`: the
//! kernel spreads connections over the shards' listener siblings, each
//! shard serves its own, and an RFC 6062 data connection that lands on
//! another shard than its peer connection is handed there (see
//! `src/net/stream/transfer.rs`). Which shard served a connection is read
//! from the server's log ("connection open" carries a `shard` field, a
//! hand-off logs its own line).
//!
//! With 4 shards the chance that 32 connections all land on one, or 16
//! data connections all on their control connection's shard, is 4^-31
//! and 4^-16: the tests assert the spreading, and that every connection
//! works wherever it landed.

// Black-box tests wait for conditions with real deadlines; the clock ban
// is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    authenticated_request, code_of, read_stun, stream_allocate, stream_connect, tcp_connect, transaction_id, EchoPeer,
    TcpEcho, TestServer, LONG_TERM_USER_TOML,
};
use rustls::version::TLS13;
use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter};

const WORKERS: &str = "workers = 4";

/// Room for every connection of these tests from one address and user.
const LIMITS_TOML: &str = "[limits]\nmax_allocations_per_user = 100\ntls_handshakes_per_source = 1000\n";

/// Bound for conditions the server should reach within a moment.
const PATIENCE: Duration = Duration::from_secs(10);

fn server() -> TestServer {
    TestServer::start_with(WORKERS, &format!("{LONG_TERM_USER_TOML}\n{LIMITS_TOML}"))
}

/// A client's byte stream to the server: TCP, or TLS over TCP.
trait Stream: Read + Write {}
impl<S: Read + Write> Stream for S {}

fn connect(server: &TestServer, tls: bool) -> Box<dyn Stream> {
    if tls {
        Box::new(
            server
                .ca()
                .connect(server.tls_addr(), &[&TLS13])
                .expect("TLS handshake"),
        )
    } else {
        Box::new(tcp_connect(server.addr()))
    }
}

/// Allocates a relay of `transport` (17 UDP, 6 TCP) and permits `peer`;
/// returns the relayed address.
fn allocate(stream: &mut Box<dyn Stream>, transport: u8, peer: SocketAddr) -> SocketAddr {
    stream_allocate(stream, transport, peer)
}

/// Sends `payload` to `peer` in a Send indication and returns what comes
/// back in a Data indication (the echo).
fn send_and_receive(stream: &mut Box<dyn Stream>, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Indication, method::SEND, transaction_id());
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).bytes(attr::DATA, payload);
    w.finish(None, false);
    stream.write_all(&buf).expect("Send indication");
    stream.flush().expect("flush");
    let data = read_stun(stream);
    let msg = Message::parse(&data).expect("a Data indication");
    assert_eq!((msg.class(), msg.method()), (Class::Indication, method::DATA));
    msg.get(attr::DATA).expect("DATA").to_vec()
}

/// The shards that logged "connection open" for clients of `transport`
/// ("Tcp" or "Tls").
fn shards_serving(server: &TestServer, transport: &str) -> BTreeSet<u32> {
    let client = format!("client={transport}:");
    server
        .stderr_log()
        .lines()
        .filter(|l| l.contains("connection open") && l.contains(&client))
        .filter_map(|l| {
            let rest = l.split("shard=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// Hand-offs the server logged so far.
fn handoffs_logged(server: &TestServer) -> usize {
    server
        .stderr_log()
        .lines()
        .filter(|l| l.contains("connection handed to the shard of its peer connection"))
        .count()
}

#[test]
fn tcp_and_tls_clients_are_served_by_several_shards_and_all_relay() {
    let server = server();
    let peer = EchoPeer::start();
    // 16 of each, all open at once, each with a UDP relay of its own.
    let mut clients: Vec<(bool, Box<dyn Stream>)> = (0..32)
        .map(|i| {
            let tls = i % 2 == 1;
            let mut stream = connect(&server, tls);
            allocate(&mut stream, 17, peer.addr());
            (tls, stream)
        })
        .collect();
    for (i, (tls, stream)) in clients.iter_mut().enumerate() {
        let payload = format!("client {i} tls {tls}");
        assert_eq!(
            send_and_receive(stream, peer.addr(), payload.as_bytes()),
            payload.as_bytes(),
            "client {i} (TLS: {tls})"
        );
    }
    assert_eq!(peer.received(), 32);
    for transport in ["Tcp", "Tls"] {
        let shards = shards_serving(&server, transport);
        assert!(
            shards.len() > 1 && shards.iter().all(|s| *s < 4),
            "{transport} connections served by shards {shards:?} only"
        );
    }
}

/// Connect (RFC 6062 §5.2) on `control`: the CONNECTION-ID.
fn connect_peer(control: &mut Box<dyn Stream>, peer: SocketAddr) -> u32 {
    stream_connect(control, peer).unwrap_or_else(|code| panic!("Connect to {peer}: {code}"))
}

/// Binds peer connection `id` from a new connection (RFC 6062 §5.4);
/// returns the answer's code and the connection.
fn connection_bind(server: &TestServer, tls: bool, id: u32) -> (u16, Box<dyn Stream>) {
    let mut data = connect(server, tls);
    let answer = authenticated_request(&mut data, method::CONNECTION_BIND, |w| {
        w.u32(attr::CONNECTION_ID, id);
    });
    (code_of(&answer), data)
}

/// A TCP allocation (control over TCP or TLS) on `server` with a peer
/// connection to each of `n` new echo peers: the control connection, the
/// peers (kept while the test runs) and the connection ids, in order.
fn allocation_with_peer_connections(
    server: &TestServer,
    tls: bool,
    n: usize,
) -> (Box<dyn Stream>, Vec<TcpEcho>, Vec<u32>) {
    let peers: Vec<TcpEcho> = (0..n).map(|_| TcpEcho::start()).collect();
    let mut control = connect(server, tls);
    allocate(&mut control, 6, peers[0].addr);
    let ids = peers.iter().map(|p| connect_peer(&mut control, p.addr)).collect();
    (control, peers, ids)
}

/// Reads `payload` back whole from a data connection spliced with an echo
/// peer (splice number `i`).
fn assert_echoed(stream: &mut Box<dyn Stream>, payload: &str, i: usize) {
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).expect("the echo through the splice");
    assert_eq!(back, payload.as_bytes(), "splice {i}");
}

/// One TCP allocation (control over TCP or TLS) connects to 16 peers, and
/// 16 new connections bind them: every bind and every splice works, and
/// some of the data connections were handed to the control connection's
/// shard.
fn assert_many_data_connections_meet_their_peer_connections(tls: bool) {
    let server = server();
    let (_control, _peers, ids) = allocation_with_peer_connections(&server, tls, 16);
    let shards: BTreeSet<u32> = ids.iter().map(|id| id >> 24).collect();
    assert_eq!(shards.len(), 1, "one core issued every id: {ids:08x?}");
    let mut data: Vec<Box<dyn Stream>> = ids
        .iter()
        .map(|&id| {
            let (code, stream) = connection_bind(&server, tls, id);
            assert_eq!(code, 200, "ConnectionBind {id:08x}");
            stream
        })
        .collect();
    for (i, stream) in data.iter_mut().enumerate() {
        let payload = format!("through splice {i}");
        stream
            .write_all(payload.as_bytes())
            .expect("write to the data connection");
        stream.flush().expect("flush");
        assert_echoed(stream, &payload, i);
    }
    assert!(
        handoffs_logged(&server) > 0,
        "no data connection was handed on; shards: {:?}",
        shards_serving(&server, if tls { "Tls" } else { "Tcp" })
    );
}

#[test]
fn tcp_data_connections_meet_their_peer_connection_on_its_shard() {
    assert_many_data_connections_meet_their_peer_connections(false);
}

#[test]
fn tls_data_connections_meet_their_peer_connection_on_its_shard() {
    assert_many_data_connections_meet_their_peer_connections(true);
}

/// A client that writes its first bytes for the peer right behind its
/// ConnectionBind, signed with the control connection's nonce, in one
/// write: the bytes read with the bind (or still inside the TLS session)
/// move with the connection and reach the peer after the answer.
fn assert_bytes_behind_a_connection_bind_cross_the_handoff(tls: bool) {
    use turnpike::proto::testkit::client::{encode, Challenge, Cred};
    let server = server();
    let (mut control, _peers, ids) = allocation_with_peer_connections(&server, tls, 8);
    // The control connection's nonce, from a challenged Refresh.
    let unsigned = encode(Class::Request, method::REFRESH, transaction_id(), |_| {}, None);
    control.write_all(&unsigned).expect("Refresh");
    control.flush().expect("flush");
    let challenge = Challenge::of(&read_stun(&mut control)).expect("a 401 with a nonce");
    let cred = Cred::new(crate::common::USER, challenge.realm(), crate::common::PASSWORD);
    for (i, id) in ids.into_iter().enumerate() {
        let mut data = connect(&server, tls);
        let bind = |w: &mut MessageWriter<'_>| {
            w.u32(attr::CONNECTION_ID, id);
        };
        let mut bytes = encode(
            Class::Request,
            method::CONNECTION_BIND,
            transaction_id(),
            bind,
            Some((&cred, &challenge)),
        );
        let payload = format!("right behind bind {i}");
        bytes.extend_from_slice(payload.as_bytes());
        data.write_all(&bytes).expect("ConnectionBind and data");
        data.flush().expect("flush");
        assert_eq!(code_of(&read_stun(&mut data)), 200, "ConnectionBind {id:08x}");
        assert_echoed(&mut data, &payload, i);
    }
    assert!(handoffs_logged(&server) > 0, "no data connection was handed on");
}

#[test]
fn tcp_bytes_behind_a_connection_bind_cross_the_handoff() {
    assert_bytes_behind_a_connection_bind_cross_the_handoff(false);
}

#[test]
fn tls_bytes_behind_a_connection_bind_cross_the_handoff() {
    assert_bytes_behind_a_connection_bind_cross_the_handoff(true);
}

/// An id no core holds gets 400 from the shard it names, or from the
/// accepting shard if it names none that runs, and the connection is not
/// lost on the way.
#[test]
fn a_connection_bind_for_an_unknown_id_gets_400_whatever_shard_it_names() {
    let server = server();
    for shard in [0u32, 1, 2, 3, 200] {
        let id = (shard << 24) | 0x00ab_cdef;
        let (code, mut data) = connection_bind(&server, false, id);
        assert_eq!(code, 400, "ConnectionBind {id:08x}");
        // Still framed and served: a Binding is answered.
        assert!(crate::common::stream_binding(&mut data).is_some(), "after {id:08x}");
    }
    // Wait (bounded) for the log; every run connection is counted once.
    let deadline = Instant::now() + PATIENCE;
    while handoffs_logged(&server) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(handoffs_logged(&server) > 0, "no connection was handed on");
}

/// True if a Binding request on `stream` is answered (false if the
/// server closed it).
fn answers_binding(stream: &mut TcpStream) -> bool {
    let mut header = [0u8; 20];
    stream
        .write_all(&crate::common::binding_request(&transaction_id()))
        .is_ok()
        && stream.read_exact(&mut header).is_ok()
}

/// Connections handed on are counted once: after every one closes, the
/// whole `max_connections` budget can be opened again.
#[test]
fn handed_connections_give_their_slot_back_once() {
    let server = TestServer::start_with(
        WORKERS,
        &format!("{LONG_TERM_USER_TOML}\n[limits]\nmax_connections = 6\nmax_allocations_per_user = 100\n"),
    );
    for round in 0..3 {
        // Five binds naming every shard, most of them handed on.
        let held: Vec<Box<dyn Stream>> = (0..5u32)
            .map(|i| {
                let (code, data) = connection_bind(&server, false, (i % 4) << 24 | 1);
                assert_eq!(code, 400, "round {round}");
                data
            })
            .collect();
        let mut sixth = tcp_connect(server.addr());
        assert!(answers_binding(&mut sixth), "round {round}: the sixth");
        let mut seventh = tcp_connect(server.addr());
        assert!(
            !answers_binding(&mut seventh),
            "round {round}: a seventh is beyond the limit"
        );
        drop(held);
        drop((sixth, seventh));
        // The slots come back as the server sees the closes.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut probes: Vec<TcpStream> = (0..6).map(|_| tcp_connect(server.addr())).collect();
            if probes.iter_mut().all(answers_binding) {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: slots not given back");
            drop(probes);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
