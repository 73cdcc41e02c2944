//! STUN/TURN over TCP (RFC 8489 §6.2.2, RFC 8656 §3.1): framing on a
//! stream, a connection's allocation ending with it, and the connection
//! limits that keep silent, trickling or garbage-sending connections from
//! holding the server. coturn's `turnutils_uclient -t` relaying over TCP is
//! in `interop/coturn_tools.rs`.

// Black-box tests wait for conditions with real deadlines; the clock ban
// is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    authenticated_request, binding_request, closed_by_server, parse_binding_success, read_stun, stream_binding,
    stun_binding, tcp_connect, transaction_id, TestServer, LONG_TERM_USER_TOML,
};
use turnpike::proto::stun::{attr, method, Class, Message};

/// Generous bound for conditions the server should reach within a few
/// seconds; a test waits for the condition, never for this long.
const PATIENCE: Duration = Duration::from_secs(10);

fn connect(server: &TestServer) -> TcpStream {
    tcp_connect(server.addr())
}

fn assert_binding_answered(stream: &mut TcpStream) {
    let mapped = stream_binding(stream).expect("a Binding success");
    assert_eq!(mapped, stream.local_addr().expect("local addr"));
}

#[test]
fn binding_over_tcp_is_answered_however_the_stream_is_cut() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let mut stream = connect(&server);
    // One request in three writes, then two requests in one write.
    let txid = transaction_id();
    let request = binding_request(&txid);
    for piece in [&request[..3], &request[3..11], &request[11..]] {
        stream.write_all(piece).expect("write");
        thread::sleep(Duration::from_millis(20));
    }
    let answer = read_stun(&mut stream);
    assert_eq!(
        parse_binding_success(&answer, &txid),
        Some(stream.local_addr().unwrap())
    );
    let (a, b) = (transaction_id(), transaction_id());
    let mut both = binding_request(&a);
    both.extend_from_slice(&binding_request(&b));
    stream.write_all(&both).expect("write");
    assert!(parse_binding_success(&read_stun(&mut stream), &a).is_some());
    assert!(parse_binding_success(&read_stun(&mut stream), &b).is_some());
}

#[test]
fn garbage_closes_only_the_connection_that_sent_it() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let mut bystander = connect(&server);
    assert_binding_answered(&mut bystander);

    let mut not_turn = connect(&server);
    not_turn.write_all(&[0xFF; 8]).expect("write");
    assert!(
        closed_by_server(&mut not_turn),
        "first bits 11 must close the connection"
    );

    // 'G' starts with the bits 01, so this reads as ChannelData of 0x5420
    // bytes: more than the default max_frame_size.
    let mut http = connect(&server);
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    assert!(
        closed_by_server(&mut http),
        "an oversized frame must close the connection"
    );

    assert_binding_answered(&mut bystander);
    assert_binding_answered(&mut connect(&server));
}

#[test]
fn silent_and_trickling_connections_are_closed_while_others_are_served() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nconnection_setup_timeout = \"2s\"\n"
    ));
    let mut silent: Vec<TcpStream> = (0..100).map(|_| connect(&server)).collect();
    // Frames of the right shape that are not STUN (no magic cookie, not a
    // Binding) do not count as a first message either.
    for _ in 0..10 {
        let mut junk = connect(&server);
        let mut frame = vec![0x00, 0x03, 0x00, 0x00];
        frame.extend_from_slice(&[0xAB; 16]);
        junk.write_all(&frame).expect("write");
        silent.push(junk);
    }
    // Trickle a valid Binding request a byte every 300 ms: it would take 6 s.
    let tricklers: Vec<_> = (0..10)
        .map(|_| {
            let mut stream = connect(&server);
            thread::spawn(move || {
                let request = binding_request(&transaction_id());
                for byte in request {
                    if stream.write_all(&[byte]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(300));
                }
                closed_by_server(&mut stream)
            })
        })
        .collect();

    // Meanwhile everyone else is served, over TCP and UDP.
    assert_binding_answered(&mut connect(&server));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(stun_binding(&udp, server.addr(), Duration::from_secs(2)).is_some());

    for stream in &mut silent {
        assert!(
            closed_by_server(stream),
            "a silent connection outlived the setup timeout"
        );
    }
    for trickler in tricklers {
        assert!(
            trickler.join().unwrap(),
            "a trickling connection outlived the setup timeout"
        );
    }
    assert!(server.is_running());
}

#[test]
fn connections_beyond_the_limit_are_closed_and_the_slots_come_back() {
    let server = TestServer::start(&format!("{LONG_TERM_USER_TOML}\n[limits]\nmax_connections = 20\n"));
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = connect(&server);
            assert_binding_answered(&mut stream);
            stream
        })
        .collect();
    for _ in 0..5 {
        let mut extra = connect(&server);
        assert!(closed_by_server(&mut extra), "connection 21+ was kept");
    }
    held.truncate(10);
    // The server notices the closed ones shortly; wait for a slot.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut stream = connect(&server);
        let txid = transaction_id();
        let served = stream.write_all(&binding_request(&txid)).is_ok() && {
            let mut header = [0u8; 20];
            stream.read_exact(&mut header).is_ok()
        };
        if served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection slot came back after closing 10"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_binding_answered(&mut held[0]);
}

#[test]
fn closing_the_connection_deletes_its_allocation_and_frees_the_relay_port() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let mut stream = connect(&server);
    let answer = authenticated_request(&mut stream, method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let msg = Message::parse(&answer).expect("an Allocate answer");
    assert_eq!(msg.class(), Class::Success, "Allocate over TCP failed: {answer:02x?}");
    let relay: SocketAddr = msg
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
        .expect("valid");
    assert!(server.relay_ports().contains(&relay.port()));
    assert!(
        UdpSocket::bind(relay).is_err(),
        "the relay port is in use while allocated"
    );

    drop(stream);
    let deadline = Instant::now() + PATIENCE;
    while UdpSocket::bind(relay).is_err() {
        assert!(
            Instant::now() < deadline,
            "relay port still bound after the connection closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stderr_log().contains("connection closed"));
}
