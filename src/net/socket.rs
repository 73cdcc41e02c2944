//! How the drivers open sockets: UDP listeners and relays, TCP listeners
//! and relays, `SO_REUSEPORT` siblings for the shards, and the host's own
//! interface addresses.
//!
//! Every socket is non-blocking (a shard adopts it into its tokio
//! runtime), and an IPv6 socket is IPv6-only, so `0.0.0.0:p` and `[::]:p`
//! are two sockets that can both be configured. Errors are returned, never
//! retried here: [`super::start`] fails on a listener it cannot bind, the
//! relay binder tries another port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A listening address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {proto} {addr}: {source}")]
pub struct BindError {
    pub proto: &'static str,
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// The two kinds of UDP socket the server opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UdpRole {
    /// A STUN/TURN listener: sees every client's traffic, so it gets roomy
    /// kernel buffers (capped by `net.core.[rw]mem_max`), and
    /// `SO_REUSEPORT` when several shards share its address.
    Listener { reuse_port: bool },
    /// One allocation's relay socket: the kernel defaults suffice.
    Relay,
}

/// Opens a non-blocking UDP socket bound to `addr`.
pub(super) fn bind_udp(addr: SocketAddr, role: UdpRole) -> io::Result<std::net::UdpSocket> {
    // Non-blocking from birth: two fcntl calls fewer per Allocate.
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let UdpRole::Listener { reuse_port } = role {
        socket.set_reuse_port(reuse_port)?;
        // Without this a single-shard listener keeps the ~208 KiB default
        // and drops bursts that coturn (4 MiB) absorbs: see BENCHMARKS.md.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Opens a non-blocking TCP listener bound to `addr` that holds up to
/// `backlog` connections not yet accepted. `SO_REUSEADDR` is always on: a
/// restart must not fail on the previous run's TIME_WAIT connections, and
/// a TCP relay shares its address with its outgoing connections.
pub(super) fn bind_tcp(addr: SocketAddr, reuse_port: bool, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Binds `wanted` once per shard: shard 0's socket first, so that port 0
/// becomes a real port its `SO_REUSEPORT` siblings then share. Returns the
/// bound address and one socket per shard.
pub(super) fn bind_per_shard<S>(
    proto: &'static str,
    wanted: SocketAddr,
    workers: usize,
    bind: impl Fn(SocketAddr, bool) -> io::Result<S>,
    local_addr: impl Fn(&S) -> io::Result<SocketAddr>,
) -> Result<(SocketAddr, Vec<S>), BindError> {
    let error = |addr| move |source| BindError { proto, addr, source };
    let first = bind(wanted, workers > 1).map_err(error(wanted))?;
    let bound = local_addr(&first).map_err(error(wanted))?;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(bind(bound, true).map_err(error(bound))?);
    }
    Ok((bound, sockets))
}

/// Addresses of this host's interfaces (for the default advertised relay
/// addresses and for recognising the server's own addresses as peers).
pub(super) fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then
    // free with freeifaddrs; every pointer is checked for null first, and
    // each sockaddr is read as the type its family says it is.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}
