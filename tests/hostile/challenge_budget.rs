//! A UDP flood that spoofs an address spends that address's challenge
//! budget (SECURITY.md, "Reflection and amplification"), black-box on
//! loopback: the address's real owner, retransmitting as RFC 8489 §6.2.1
//! says, still gets its 401 over UDP (the grace goes to a sender that has
//! not had one), a TCP client from the address is challenged as if there
//! were no flood, and the flood itself gets no more than the documented
//! bound.
//!
//! One worker, so that the flood and the clients meet the same core (the
//! budget is per worker), and a budget that does not refill within the
//! test (512 bytes, then 1 byte a second), so that once the flood has
//! spent it only the grace can answer anyone over UDP.

// Time bounds of the test itself, not of the core.
#![allow(clippy::disallowed_methods)]

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    allocate_request, authenticated_request, code_of, read_stun, tcp_connect, transaction_id, TestServer,
    LONG_TERM_USER_TOML, PASSWORD, USER,
};
use turnpike::proto::stun::{attr, method, Message};
use turnpike::proto::testkit::{client, Challenge, Cred};

/// The flood's address, and the honest clients'.
const ADDRESS: &str = "127.0.0.1";
const RATE: u64 = 1;
const BURST: u64 = 512;
/// The flood sends at most this many requests...
const FLOOD_MAX: usize = 60_000;
/// ...one every millisecond at most, until the honest clients are done.
const FLOOD_PACE: Duration = Duration::from_millis(1);

/// Sends `request` from `socket` and waits for its answer as an RFC 8489
/// §6.2.1 client does with the defaults: RTO 500 ms doubling, seven tries
/// (the last at 31.5 s), then 16 RTOs (39.5 s in all). Answers to other
/// transactions are skipped. The answer and the try that got it (1..=7).
fn retransmitting(socket: &UdpSocket, server: SocketAddr, request: &[u8]) -> io::Result<(Vec<u8>, usize)> {
    const RTO: Duration = Duration::from_millis(500);
    const TRIES: usize = 7;
    let id = Message::parse(request).expect("a request").transaction_id();
    let mut wait = RTO;
    for attempt in 1..=TRIES {
        socket.send_to(request, server)?;
        let deadline = Instant::now() + if attempt == TRIES { RTO * 16 } else { wait };
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            socket.set_read_timeout(Some(left))?;
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == id) => {
                    return Ok((buf[..n].to_vec(), attempt));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e),
            }
        }
        wait *= 2;
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to seven tries"))
}

/// What the flood sent and was answered.
struct FloodReport {
    sent: usize,
    answered_bytes: u64,
    largest_answer: u64,
    elapsed: Duration,
}

/// Unsigned Allocates from `socket` until `stop` (or [`FLOOD_MAX`]),
/// reading what comes back.
fn flood(socket: UdpSocket, server: SocketAddr, stop: Arc<AtomicBool>) -> FloodReport {
    let started = Instant::now();
    let mut report = FloodReport {
        sent: 0,
        answered_bytes: 0,
        largest_answer: 0,
        elapsed: Duration::ZERO,
    };
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1500];
    let mut drain = |report: &mut FloodReport| {
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            report.answered_bytes += n as u64;
            report.largest_answer = report.largest_answer.max(n as u64);
        }
    };
    while !stop.load(Ordering::Relaxed) && report.sent < FLOOD_MAX {
        if socket.send_to(&allocate_request(None), server).is_ok() {
            report.sent += 1;
        }
        drain(&mut report);
        thread::sleep(FLOOD_PACE);
    }
    // The last answers on their way.
    thread::sleep(Duration::from_millis(200));
    drain(&mut report);
    report.elapsed = started.elapsed();
    report
}

#[test]
fn a_udp_flood_spoofing_an_address_leaves_its_owner_a_challenge_and_tcp_untouched() {
    let server = TestServer::start_with(
        "workers = 1\n",
        &format!("{LONG_TERM_USER_TOML}\n[limits]\nchallenge_bytes_per_second = {RATE}\n"),
    );
    let flooder = UdpSocket::bind(format!("{ADDRESS}:0")).expect("bind the flood");
    // The flood starts by spending the address's budget: these are ahead
    // of anything the honest clients send in the listener's queue.
    for _ in 0..20 {
        flooder.send_to(&allocate_request(None), server.addr()).expect("send");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let (stop, addr) = (stop.clone(), server.addr());
        thread::spawn(move || flood(flooder, addr, stop))
    };

    // An honest UDP client on the flood's address (another port), as a
    // real client retransmits: it gets its 401 and then allocates.
    let honest = UdpSocket::bind(format!("{ADDRESS}:0")).expect("bind the honest client");
    let mut challenged_on = None;
    let answer = client::authenticated(
        method::ALLOCATE,
        |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        },
        transaction_id,
        |realm| Cred::new(USER, realm, PASSWORD),
        |request| {
            let (answer, attempt) = retransmitting(&honest, server.addr(), request)?;
            if Challenge::of(&answer).is_some() {
                challenged_on = Some(attempt);
            }
            Ok::<_, io::Error>(answer)
        },
    );
    let udp_allocated = answer.map(|a| code_of(&a));
    // A TCP client from the same address, during the flood: challenged
    // every time, at once, as a stream always is (more than the one grace
    // a second the address gets over UDP), and it allocates.
    let mut tcp = tcp_connect(server.addr());
    for _ in 0..5 {
        let request = allocate_request(None);
        tcp.write_all(&request).expect("send over TCP");
        let answer = read_stun(&mut tcp);
        assert!(Challenge::of(&answer).is_some(), "a 401 over TCP: {answer:02x?}");
    }
    let tcp_allocated = code_of(&authenticated_request(&mut tcp, method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    }));
    let refused = server.wait_metric(
        r#"turnpike_quota_refusals_total{limit="challenge_budget"}"#,
        Duration::from_secs(3),
        |n| n > 0.0,
    );
    stop.store(true, Ordering::Relaxed);
    let report = flooding.join().expect("the flood thread");

    assert!(challenged_on.is_some(), "the honest UDP client got no challenge");
    assert_eq!(udp_allocated.ok(), Some(200), "the honest UDP client allocates");
    assert_eq!(tcp_allocated, 200, "the TCP client allocates");
    assert!(refused > Some(0.0), "the flood spent the budget: {refused:?}");
    // The bound of SECURITY.md: the budget, plus one challenge a second.
    let secs = report.elapsed.as_secs_f64();
    let bound = BURST as f64 + RATE as f64 * secs + (1.0 + secs) * report.largest_answer as f64;
    eprintln!(
        "flood: {} requests, {} bytes answered in {secs:.1} s (bound {bound:.0}); honest client challenged on try {challenged_on:?}",
        report.sent, report.answered_bytes
    );
    assert!(
        report.answered_bytes as f64 <= bound,
        "{} bytes answered to the flood, bound {bound:.0}",
        report.answered_bytes
    );
}
