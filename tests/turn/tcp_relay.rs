//! RFC 6062 TCP relays, black-box: the caps on peer connections under a
//! Connect flood while an honest TCP allocation keeps relaying; no
//! descriptor left behind by connects that outlive their allocation
//! (counted in the server's `/proc/<pid>/fd`); spliced bytes counted in
//! `/metrics` and the allocation's log line, and paced by its byte rate.
//! Every peer is a loopback sink run by the test (the test server's
//! `peers.allow` covers 127.0.0.0/8). coturn's `turnutils_uclient -T`
//! relaying through TCP relays is in `interop/coturn_tools.rs`.

// Black-box tests wait for conditions with real deadlines; the clock ban
// is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    authenticated_request, closed_by_server, code_of, stream_allocate, stream_connect, tcp_connect, TcpEcho,
    TestServer, LONG_TERM_USER_TOML,
};
use turnpike::proto::stun::{attr, method, Class};

/// Bound for conditions the server should reach within a moment; a test
/// waits for the condition, never for this long.
const PATIENCE: Duration = Duration::from_secs(10);

/// A TCP allocation (RFC 6062 §5.1) on its control connection.
struct TcpAllocation {
    control: TcpStream,
    relay: SocketAddr,
}

impl TcpAllocation {
    /// Allocates a TCP relay and permits 127.0.0.1 as peer.
    fn new(server: &TestServer) -> TcpAllocation {
        let mut control = tcp_connect(server.addr());
        let loopback: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let relay = stream_allocate(&mut control, 6, loopback);
        TcpAllocation { control, relay }
    }

    /// Connect (RFC 6062 §5.2): the CONNECTION-ID, or the error code.
    fn connect(&mut self, peer: SocketAddr) -> Result<u32, u16> {
        stream_connect(&mut self.control, peer)
    }
}

/// A data connection bound to peer connection `id` (RFC 6062 §5.4): from
/// here on it carries the peer's bytes.
fn data_connection(server: &TestServer, id: u32) -> TcpStream {
    let mut data = tcp_connect(server.addr());
    let answer = authenticated_request(&mut data, method::CONNECTION_BIND, |w| {
        w.u32(attr::CONNECTION_ID, id);
    });
    assert_eq!(code_of(&answer), 200, "ConnectionBind");
    data
}

/// Writes `payload` on a data connection spliced with an echo peer and
/// reads it back whole.
fn round_trip(data: &mut TcpStream, payload: &[u8]) {
    data.write_all(payload).expect("write to the data connection");
    let mut back = vec![0u8; payload.len()];
    data.read_exact(&mut back).expect("the echo through the splice");
    assert_eq!(back, payload, "the splice altered the bytes");
}

#[test]
fn a_connect_flood_beyond_the_caps_gets_508_while_an_honest_relay_keeps_relaying() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nmax_peer_connections_per_allocation = 4\nmax_peer_connections = 8\n"
    ));
    let peers: Vec<TcpEcho> = (0..6).map(|_| TcpEcho::start()).collect();
    let mut honest = TcpAllocation::new(&server);
    let id = honest.connect(peers[0].addr).expect("the honest Connect");
    let mut data = data_connection(&server, id);
    round_trip(&mut data, b"before the flood");

    // Two allocations flood: the first reaches its own cap (4), the second
    // the server's (8 with the honest one), and a third gets nothing.
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut flooder = TcpAllocation::new(&server);
        let codes: Vec<u16> = peers
            .iter()
            .map(|peer| {
                let code = flooder.connect(peer.addr).map_or_else(|code| code, |_| 200);
                round_trip(&mut data, b"during the flood");
                code
            })
            .collect();
        answers.push((flooder, codes));
    }
    let codes: Vec<&[u16]> = answers.iter().map(|(_, codes)| codes.as_slice()).collect();
    assert_eq!(
        codes,
        [
            &[200, 200, 200, 200, 508, 508][..],
            &[200, 200, 200, 508, 508, 508][..],
            &[508; 6][..],
        ]
    );

    // A peer connecting in to the honest relay, with its permission, is
    // refused too: the server is full.
    let mut knocking = tcp_connect(honest.relay);
    assert!(
        closed_by_server(&mut knocking),
        "a peer connection beyond the cap was kept"
    );

    server.assert_metrics_settle(&[
        ("turnpike_peer_connections", 8.0),
        (
            r#"turnpike_quota_refusals_total{limit="peer_connections_per_allocation"}"#,
            2.0,
        ),
        (r#"turnpike_quota_refusals_total{limit="peer_connections_total"}"#, 10.0),
        (r#"turnpike_requests_total{method="connect",code="508"}"#, 11.0),
    ]);
    round_trip(&mut data, b"after the flood");

    // The flood ends with its control connections: the slots come back.
    drop(answers);
    server.assert_metrics_settle(&[("turnpike_peer_connections", 1.0)]);
    let extra = TcpEcho::start();
    let id = honest.connect(extra.addr).expect("a Connect after the flood");
    round_trip(&mut data_connection(&server, id), b"a second peer");
    round_trip(&mut data, b"and the first one still");
}

/// A TCP listener on 127.0.0.1 whose accept queue is full, so that a
/// connect to it stays under way: Linux drops the SYN and the connecting
/// side retries after 1 s, 3 s, ... until the queue has room again.
struct FullListener {
    listener: TcpListener,
    addr: SocketAddr,
    filler: Option<TcpStream>,
}

impl FullListener {
    fn new() -> FullListener {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        socket.bind(&any.into()).expect("bind");
        // A backlog of 0 queues one connection: the filler fills it.
        socket.listen(0).expect("listen");
        let listener: TcpListener = socket.into();
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let filler = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("fill the accept queue");
        FullListener {
            listener,
            addr,
            filler: Some(filler),
        }
    }

    /// Makes room, so that a connect still under way would now complete.
    fn release(&mut self) {
        self.filler = None;
        let _ = self.listener.accept();
    }

    /// Connections that arrived (from a connect the server kept going).
    fn arrived(&self) -> usize {
        std::iter::from_fn(|| self.listener.accept().ok()).count()
    }
}

/// Connect requests whose peers do not answer yet, then the allocation
/// goes: the connects are abandoned with it, and the server's descriptors
/// come back to what they were; none connects late into a stream that
/// nobody would close.
#[test]
fn connects_outliving_their_allocation_leave_no_descriptor_behind() {
    use turnpike::proto::testkit::{client::Challenge, encode, Cred};
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let mut peers: Vec<FullListener> = (0..5).map(|_| FullListener::new()).collect();
    let settled_fds = || {
        // The start-up probes' connections may still be closing.
        let deadline = Instant::now() + PATIENCE;
        let mut last = server.fd_count();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = server.fd_count();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    };
    let baseline = settled_fds();

    let mut tcp = TcpAllocation::new(&server);
    // Signed Connects sent at once, without waiting for their answers
    // (they come when the peer answers): the NONCE from a 401 first.
    // (A Connect is challenged only with its XOR-PEER-ADDRESS.)
    let first_peer = peers[0].addr;
    let unsigned = encode(
        Class::Request,
        method::CONNECT,
        crate::common::transaction_id(),
        |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, first_peer);
        },
        None,
    );
    tcp.control.write_all(&unsigned).expect("send Connect");
    let challenge = Challenge::of(&crate::common::read_stun(&mut tcp.control)).expect("a 401 challenge");
    let cred = Cred::new(crate::common::USER, challenge.realm(), crate::common::PASSWORD);
    for peer in &peers {
        let connect = encode(
            Class::Request,
            method::CONNECT,
            crate::common::transaction_id(),
            |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, peer.addr);
            },
            Some((&cred, &challenge)),
        );
        tcp.control.write_all(&connect).expect("send Connect");
    }
    let connects_sent = Instant::now();
    server.assert_metrics_settle(&[("turnpike_peer_connections", 5.0)]);
    assert!(server.fd_count() >= baseline + 5, "the connects hold no socket?");

    drop(tcp);
    server.assert_metrics_settle(&[("turnpike_peer_connections", 0.0)]);
    for peer in &mut peers {
        peer.release();
    }
    let deadline = Instant::now() + PATIENCE;
    while server.fd_count() > baseline {
        assert!(
            Instant::now() < deadline,
            "{} descriptors held after the allocation went, {baseline} before",
            server.fd_count()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the SYN retries at 1 s and 3 s, an abandoned connect would have
    // reached its peer by now.
    if let Some(wait) = (connects_sent + Duration::from_secs(4)).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let late: usize = peers.iter().map(FullListener::arrived).sum();
    assert_eq!(late, 0, "abandoned connects still reached their peers");
    assert!(server.fd_count() <= baseline);
    assert!(server.is_running());
}

/// Bytes crossing a splice are the allocation's traffic: `/metrics`
/// counts them each way, and the allocation's last log line names them.
#[test]
fn spliced_bytes_are_counted_in_metrics_and_the_allocation_log_line() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let peer = TcpEcho::start();
    let mut tcp = TcpAllocation::new(&server);
    let id = tcp.connect(peer.addr).expect("Connect");
    let mut data = data_connection(&server, id);
    // 10 000 bytes in writes of several sizes, each echoed back whole.
    let mut sent = 0;
    for (i, len) in [1, 999, 4000, 5000].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
        round_trip(&mut data, &payload);
        sent += len;
    }
    assert_eq!(sent, 10_000);
    server.assert_metrics_settle(&[
        (r#"turnpike_relayed_bytes_total{direction="to_peer"}"#, 10_000.0),
        (r#"turnpike_relayed_bytes_total{direction="to_client"}"#, 10_000.0),
        (r#"turnpike_rate_limited_bytes_total{limit="allocation"}"#, 0.0),
    ]);
    drop(tcp);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = server.stderr_log();
        let line = log.lines().find(|l| l.contains("allocation deleted"));
        if let Some(line) = line {
            assert!(
                line.contains("bytes_to_peer=10000") && line.contains("bytes_to_client=10000"),
                "{line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no allocation deleted line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed_by_server(&mut data), "the splice outlived its allocation");
}

/// A splice obeys `limits.allocation_bytes_per_second` by slowing down,
/// not by losing bytes: 300 kB echoed (600 kB through the allocation,
/// both directions drawing on one rate of 200 kB/s with a 100 kB burst)
/// take about 2.5 s and arrive whole.
#[test]
fn a_splice_is_slowed_to_the_allocation_byte_rate_and_loses_nothing() {
    const RATE: u64 = 200_000;
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nallocation_bytes_per_second = {RATE}\n"
    ));
    let peer = TcpEcho::start();
    let mut tcp = TcpAllocation::new(&server);
    let id = tcp.connect(peer.addr).expect("Connect");
    let mut data = data_connection(&server, id);
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let mut writer = data.try_clone().expect("clone the data connection");
    let written = payload.clone();
    let send = std::thread::spawn(move || writer.write_all(&written));
    let mut back = vec![0u8; payload.len()];
    data.set_read_timeout(Some(PATIENCE)).expect("timeout");
    data.read_exact(&mut back)
        .expect("the whole echo through the paced splice");
    let took = started.elapsed().as_secs_f64();
    send.join()
        .expect("writer thread")
        .expect("write to the data connection");
    assert!(back == payload, "the paced splice altered the bytes");
    let rate = RATE as f64;
    let expected = (2.0 * payload.len() as f64 - rate / 2.0) / rate;
    eprintln!("600 kB through a 200 kB/s splice in {took:.2} s, expected {expected:.2} s");
    assert!(
        (expected * 0.8..expected * 1.5 + 0.5).contains(&took),
        "took {took:.2} s, expected about {expected:.2} s"
    );
    server.assert_metrics_settle(&[
        (r#"turnpike_relayed_bytes_total{direction="to_peer"}"#, 300_000.0),
        (r#"turnpike_relayed_bytes_total{direction="to_client"}"#, 300_000.0),
    ]);
}
