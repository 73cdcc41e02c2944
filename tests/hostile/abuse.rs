//! Abuse, black-box on loopback: each test has one source misbehave,
//! bounded in count and time, and asserts that an honest client from
//! another source (127.0.0.2) keeps being served during and after.
//! (The Connect flood is in `turn/tcp_relay.rs`, the WebSocket floods and the
//! slow reader in `signaling/protocol.rs`.)

// Time bounds of the test itself, not of the core.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::uclient::parse_uclient_summary;
use crate::common::{
    read_stun, require_tool, run_with_timeout, transaction_id, TestServer, LONG_TERM_USER_TOML, PASSWORD, USER,
};
use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter};
use turnpike::proto::testkit::{encode, Challenge, Cred};

const HONEST: &str = "127.0.0.2";

/// A TCP connection to `to` from `from`, with a read timeout.
fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from.parse().expect("ip"), 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// A Binding over `stream` answers with the client's address.
fn stream_binding_works(stream: &mut (impl Read + Write)) -> bool {
    let id = transaction_id();
    let request = encode(Class::Request, method::BINDING, id, |_| {}, None);
    if stream.write_all(&request).is_err() {
        return false;
    }
    let answer = read_stun(stream);
    Message::parse(&answer).is_ok_and(|m| m.class() == Class::Success && m.transaction_id() == id)
}

/// True if the server closed `stream` (EOF or reset) within a second.
fn closed_soon(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_)) && stream.read(&mut byte).map_or(true, |n| n == 0)
}

/// An authenticated Allocate over UDP from `socket` as `user`.
fn udp_allocate(socket: &UdpSocket, server: SocketAddr, user: &str, password: &str) -> Vec<u8> {
    crate::common::udp_request_as(socket, server, (user, password), method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    })
}

fn is_success(answer: &[u8]) -> bool {
    Message::parse(answer).is_ok_and(|m| m.class() == Class::Success)
}

#[test]
fn idle_connections_from_one_source_cannot_take_the_slots_of_others() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nmax_connections_per_source = 40\nconnection_idle_timeout = \"1m\"\n"
    ));
    let mut idle: Vec<TcpStream> = (0..40)
        .map(|_| tcp_from("127.0.0.1", server.addr()).expect("connect"))
        .collect();
    // Every shard accepts on its own listener sibling, so connections are
    // taken in no set order: the 40 must all be in before the 41st comes,
    // or a later one could take the place of an earlier one.
    assert_eq!(
        server.wait_metric("turnpike_stream_connections", Duration::from_secs(5), |n| n == 40.0),
        Some(40.0),
        "the 40 connections were not all accepted"
    );
    let mut refused = 0;
    for _ in 40..1_500 {
        let mut stream = tcp_from("127.0.0.1", server.addr()).expect("connect");
        if closed_soon(&mut stream) {
            refused += 1;
        } else {
            idle.push(stream);
        }
    }
    assert_eq!(refused, 1_460, "connections beyond the source's 40 are closed at once");
    // Another source is served while the 40 stay open...
    let mut honest = tcp_from(HONEST, server.addr()).expect("connect from another source");
    assert!(stream_binding_works(&mut honest));
    // ...and the flooder's own connections still work: it is only capped.
    assert!(stream_binding_works(&mut idle[0]));
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = tcp_from("127.0.0.1", server.addr()).expect("connect again");
    assert!(
        stream_binding_works(&mut again),
        "the slots come back when the connections close"
    );
}

#[test]
fn a_tls_handshake_flood_from_one_source_leaves_others_served() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\ntls_handshakes_per_source = 5\n"
    ));
    // 60 connections at once from one source: the first 10 (the burst)
    // may start a handshake, the rest are closed at accept.
    let flood: Vec<TcpStream> = (0..60)
        .map(|_| tcp_from("127.0.0.1", server.tls_addr()).expect("connect"))
        .collect();
    let closed = flood
        .into_iter()
        .filter(|s| closed_soon(&mut s.try_clone().expect("clone")))
        .count();
    assert!(closed >= 45, "only {closed} of 60 closed");
    // A client from another source completes its handshake and is served.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.ca().ca_der()).expect("trust the test CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = tcp_from(HONEST, server.tls_addr()).expect("connect");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    assert!(stream_binding_works(&mut tls), "an honest TLS client is served");
}

#[test]
fn an_unauthenticated_allocate_flood_is_answered_within_its_budget_while_others_allocate() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nchallenge_bytes_per_second = 2000\n"
    ));
    let flooder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    flooder
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let honest = UdpSocket::bind(format!("{HONEST}:0")).expect("bind 127.0.0.2");
    honest.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let started = Instant::now();
    let mut sent_bytes = 0;
    for i in 0..5_000 {
        let request = crate::common::allocate_request(None);
        sent_bytes += request.len();
        flooder.send_to(&request, server.addr()).expect("send");
        if i == 2_500 {
            assert!(
                is_success(&udp_allocate(&honest, server.addr(), USER, PASSWORD)),
                "during the flood"
            );
        }
    }
    let mut answered_bytes = 0;
    let mut largest = 0;
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = flooder.recv_from(&mut buf) {
        answered_bytes += n;
        largest = largest.max(n);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Four seconds of burst plus the rate over the run, and a grace
    // challenge a second, per worker (2).
    let budget = 2.0 * (4.0 * 2000.0 + 2000.0 * elapsed + (1.0 + elapsed) * largest as f64);
    assert!(
        (answered_bytes as f64) <= budget,
        "{answered_bytes} bytes answered to {sent_bytes} sent in {elapsed:.2} s (budget {budget:.0})"
    );
    let honest_after = UdpSocket::bind(format!("{HONEST}:0")).expect("bind");
    honest_after
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert!(
        is_success(&udp_allocate(&honest_after, server.addr(), USER, PASSWORD)),
        "after the flood"
    );
}

#[test]
fn password_guessing_is_stopped_and_a_stolen_nonce_is_stale_elsewhere() {
    let server = TestServer::start("[[auth.users]]\nname = \"user\"\npassword = \"pass\"\n[[auth.users]]\nname = \"other\"\npassword = \"other-pw\"\n");
    let guesser = UdpSocket::bind("127.0.0.1:0").expect("bind");
    guesser.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    // One address gets five guesses a minute at one username (then it is
    // refused unseen)...
    for i in 0..35 {
        assert!(!is_success(&udp_allocate(
            &guesser,
            server.addr(),
            USER,
            &format!("guess-{i}")
        )));
    }
    // ...and sixty a minute over all usernames.
    for i in 0..60 {
        let user = format!("user-{i}");
        assert!(!is_success(&udp_allocate(&guesser, server.addr(), &user, "guess")));
    }
    // Now even the right password from the guesser's address is refused...
    assert!(!is_success(&udp_allocate(&guesser, server.addr(), "other", "other-pw")));
    // ...while another source and user are served.
    let honest = UdpSocket::bind(format!("{HONEST}:0")).expect("bind");
    honest.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    assert!(is_success(&udp_allocate(&honest, server.addr(), "other", "other-pw")));
    // The shards publish their counters four times a second.
    let counted = server.wait_metric(
        r#"turnpike_auth_failures_total{reason="rate_limited"}"#,
        Duration::from_secs(3),
        |n| n > 0.0,
    );
    assert!(
        counted > Some(0.0),
        "rate-limited authentications are counted: {counted:?}"
    );

    // A nonce given to one address is stale from another.
    let thief = UdpSocket::bind(format!("{HONEST}:0")).expect("bind");
    thief.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let victim = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    victim.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let udp = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    };
    victim
        .send_to(
            &encode(Class::Request, method::ALLOCATE, transaction_id(), udp, None),
            server.addr(),
        )
        .expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = victim.recv_from(&mut buf).expect("challenge");
    let challenge = Challenge::of(&buf[..n]).expect("a 401 challenge");
    let cred = Cred::new("other", challenge.realm(), "other-pw");
    let replay = encode(
        Class::Request,
        method::ALLOCATE,
        transaction_id(),
        udp,
        Some((&cred, &challenge)),
    );
    thief.send_to(&replay, server.addr()).expect("send");
    let (n, _) = thief.recv_from(&mut buf).expect("answer");
    let answer = Message::parse(&buf[..n]).expect("parses");
    let code = answer
        .get(attr::ERROR_CODE)
        .map(|v| u16::from(v[2]) * 100 + u16::from(v[3]));
    assert_eq!(code, Some(438), "the stolen nonce is stale");
}

#[test]
fn a_peer_flooding_a_relay_port_without_permission_reaches_nobody_and_relaying_goes_on() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let client = UdpSocket::bind(format!("{HONEST}:0")).expect("bind");
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let answer = udp_allocate(&client, server.addr(), USER, PASSWORD);
    let relay = Message::parse(&answer)
        .expect("parses")
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed address")
        .expect("valid");
    let flooder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..10_000 {
        let _ = flooder.send_to(&[0xAB; 200], relay);
    }
    let mut buf = [0u8; 1500];
    assert!(
        client.recv_from(&mut buf).is_err(),
        "nothing without a permission reaches the client"
    );
    // The server goes on answering.
    let id = transaction_id();
    client
        .send_to(
            &encode(Class::Request, method::BINDING, id, |_| {}, None),
            server.addr(),
        )
        .expect("send");
    let (n, _) = client.recv_from(&mut buf).expect("a Binding answer");
    assert_eq!(Message::parse(&buf[..n]).expect("parses").transaction_id(), id);
}

/// `reason`'s count in `turnpike_auth_failures_total`, once the shards
/// have published what they counted (four times a second).
fn auth_failures(server: &TestServer, reason: &str, done: impl Fn(f64) -> bool) -> f64 {
    let sample = format!(r#"turnpike_auth_failures_total{{reason="{reason}"}}"#);
    server
        .wait_metric(&sample, Duration::from_secs(3), done)
        .unwrap_or_default()
}

#[test]
fn a_stale_turnutils_client_does_not_lock_the_shared_user_out() {
    // One shard, so that every address meets the same tables.
    let server = TestServer::start_with("workers = 1", LONG_TERM_USER_TOML);
    let uclient = require_tool("turnutils_uclient");
    let port = server.addr().port().to_string();
    // A client left with an old password for the user every client shares:
    // coturn's client retries at once, over and over.
    let stale = run_with_timeout(
        std::process::Command::new(&uclient).args([
            "-u",
            USER,
            "-w",
            "old-password",
            "-p",
            &port,
            "-n",
            "1",
            "-m",
            "1",
            "-y",
            "127.0.0.1",
        ]),
        Duration::from_secs(20),
    );
    assert!(!stale.success(), "the stale password worked: {}", stale.combined());
    let looked_at = auth_failures(&server, "bad_integrity", |n| n >= 5.0);
    let refused = auth_failures(&server, "rate_limited", |n| n > 0.0);
    assert!(
        looked_at + refused > 30.0,
        "the stale client tried more often than the username's budget: {looked_at} + {refused}"
    );
    assert_eq!(looked_at, 5.0, "one address gets five guesses at one username");
    // The other clients of the user, from addresses of their own, relay.
    let honest = run_with_timeout(
        std::process::Command::new(&uclient).args([
            "-u",
            USER,
            "-w",
            PASSWORD,
            "-p",
            &port,
            "-n",
            "20",
            "-m",
            "2",
            "-y",
            "-L",
            HONEST,
            "127.0.0.1",
        ]),
        Duration::from_secs(20),
    );
    let summary = parse_uclient_summary(&honest.stdout);
    assert!(
        honest.success() && summary.is_some_and(|s| s.sent > 0 && s.lost == 0),
        "an honest client was locked out: {}",
        honest.combined()
    );
    let another = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    another.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    assert!(is_success(&udp_allocate(&another, server.addr(), USER, PASSWORD)));
}

#[test]
fn guesses_spread_over_many_addresses_get_only_the_usernames_budget() {
    let server = TestServer::start_with("workers = 1", LONG_TERM_USER_TOML);
    // A client of the user, before the guessing starts.
    let known = UdpSocket::bind(format!("{HONEST}:0")).expect("bind");
    known.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    assert!(is_success(&udp_allocate(&known, server.addr(), USER, PASSWORD)));
    // Three guesses from each of 100 addresses.
    for i in 0..100u8 {
        let guesser = UdpSocket::bind(format!("127.0.1.{}:0", i + 1)).expect("bind");
        guesser.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        for j in 0..3 {
            assert!(!is_success(&udp_allocate(
                &guesser,
                server.addr(),
                USER,
                &format!("guess-{i}-{j}")
            )));
        }
    }
    let refused = auth_failures(&server, "rate_limited", |n| n >= 270.0);
    let looked_at = auth_failures(&server, "bad_integrity", |n| n >= 30.0);
    assert_eq!(
        (looked_at, refused),
        (30.0, 270.0),
        "of 300 guesses, the username's budget (30 a minute) was looked at"
    );
    // While the budget is spent, a new address is refused even with the
    // right password (the trade-off SECURITY.md states)...
    let newcomer = UdpSocket::bind("127.0.2.1:0").expect("bind");
    newcomer
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert!(!is_success(&udp_allocate(&newcomer, server.addr(), USER, PASSWORD)));
    // ...but the address that authenticated as the user lately goes on.
    let known_again = UdpSocket::bind(format!("{HONEST}:0")).expect("bind");
    known_again
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert!(is_success(&udp_allocate(&known_again, server.addr(), USER, PASSWORD)));
}
