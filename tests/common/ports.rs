//! Ports for test servers: probed free ports, and a relay port range of
//! its own for each server.

use std::net::UdpSocket;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU16, Ordering};

/// First relay port handed out to test servers, below the ephemeral range.
const RELAY_PORT_BASE: u16 = 20_000;
/// Relay ports per test server.
const RELAY_PORTS_PER_SERVER: u16 = 300;
/// Number of disjoint relay port slices in 20000-29899.
const RELAY_SLICES: u16 = 33;

static NEXT_SLICE: AtomicU16 = AtomicU16::new(0);

/// A distinct relay port range for each server of this process; the pid
/// spreads test binaries that might run side by side.
pub fn next_relay_ports() -> RangeInclusive<u16> {
    let offset = (std::process::id() % u32::from(RELAY_SLICES)) as u16;
    let slice = (offset + NEXT_SLICE.fetch_add(1, Ordering::Relaxed)) % RELAY_SLICES;
    let low = RELAY_PORT_BASE + slice * RELAY_PORTS_PER_SERVER;
    low..=low + RELAY_PORTS_PER_SERVER - 1
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free TCP port")
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    socket.local_addr().expect("local_addr").port()
}
