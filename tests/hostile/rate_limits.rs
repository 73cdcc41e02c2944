//! Byte rates (`limits.allocation_bytes_per_second`,
//! `limits.user_bytes_per_second`): a flow offered at twice its rate gets
//! the rate, within 10 %, plus the documented burst (half a second of the
//! rate), and the drops are counted in `/metrics`.

#![allow(clippy::disallowed_methods)] // pacing and waits use the real clock

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{rest_credential, turn_client, unix_now, TestServer};
use webrtc_util::Conn;

const RATE: u64 = 200_000;
const PACKET: usize = 1000;
const SEND_FOR: Duration = Duration::from_secs(3);

/// A UDP peer that counts the bytes it receives and sends nothing back
/// (an echo would draw on the same bucket).
struct Sink {
    addr: std::net::SocketAddr,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    fn start() -> Sink {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(n) = socket.recv(&mut buf) {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        });
        Sink { addr, bytes }
    }

    /// Bytes received once traffic has stopped arriving.
    fn settled(&self) -> u64 {
        let mut last = u64::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.bytes.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// Offers `PACKET`-byte datagrams at `offered` bytes/s through each relay
/// (round robin) for `SEND_FOR`; returns how long it took.
async fn offer(relays: &[&(dyn Conn + Send + Sync)], to: std::net::SocketAddr, offered: u64) -> Duration {
    let payload = vec![0x5au8; PACKET];
    let per_packet = Duration::from_secs_f64(PACKET as f64 / offered as f64);
    let started = Instant::now();
    let mut next = started;
    let mut i = 0usize;
    while started.elapsed() < SEND_FOR {
        relays[i % relays.len()]
            .send_to(&payload, to)
            .await
            .expect("send through the relay");
        i += 1;
        next += per_packet;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    started.elapsed()
}

/// What a bucket of `RATE` passes in `took`: the burst plus the rate.
fn expected(took: Duration) -> u64 {
    RATE / 2 + (RATE as f64 * took.as_secs_f64()) as u64
}

fn assert_within_ten_percent(received: u64, took: Duration, what: &str) {
    let expected = expected(took);
    let error = received.abs_diff(expected) as f64 / expected as f64;
    eprintln!(
        "{what}: {received} bytes in {took:?}, expected {expected}: off by {:.2} %",
        error * 100.0
    );
    assert!(
        error <= 0.10,
        "{what}: {received} bytes passed in {took:?}, expected {expected} (rate {RATE} B/s + burst): off by {:.1} %",
        error * 100.0
    );
}

#[tokio::test]
async fn an_allocation_gets_its_byte_rate() {
    let server = TestServer::start(&format!(
        "[auth]\nsecrets = [\"rate\"]\n[limits]\nallocation_bytes_per_second = {RATE}\n"
    ));
    let sink = Sink::start();
    let (user, pass) = rest_credential("rate", "flow", unix_now() + 600);
    let (client, _) = turn_client(server.addr(), &user, &pass).await;
    let relay = client.allocate().await.expect("allocate");
    let took = offer(&[&relay], sink.addr, 2 * RATE).await;
    assert_within_ten_percent(sink.settled(), took, "one allocation");
    // Shards publish their counts every 250 ms.
    let dropped = server.wait_metric(
        r#"turnpike_rate_limited_packets_total{limit="allocation"}"#,
        Duration::from_secs(3),
        |n| n > 0.0,
    );
    assert!(dropped > Some(0.0), "no drop counted: {dropped:?}");
}

#[tokio::test]
async fn a_user_gets_its_byte_rate_over_all_its_allocations() {
    let server = TestServer::start(&format!(
        "[auth]\nsecrets = [\"rate\"]\n[limits]\nuser_bytes_per_second = {RATE}\n"
    ));
    let sink = Sink::start();
    let (user, pass) = rest_credential("rate", "two-allocations", unix_now() + 600);
    let (first, _) = turn_client(server.addr(), &user, &pass).await;
    let (second, _) = turn_client(server.addr(), &user, &pass).await;
    let a = first.allocate().await.expect("allocate");
    let b = second.allocate().await.expect("allocate");
    let took = offer(&[&a, &b], sink.addr, 2 * RATE).await;
    assert_within_ten_percent(sink.settled(), took, "two allocations of one user");
}
