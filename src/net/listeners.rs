//! The listening sockets of every shard: each UDP, TCP and TLS listener of
//! the config is bound once per shard, as `SO_REUSEPORT` siblings on one
//! address, before any shard starts (see [`crate::net::start`]), so a port
//! that is taken fails the start with a clear error and `port 0` resolves
//! to one concrete port that every sibling shares.
//!
//! Invariants:
//! * every shard gets one sibling of every listener, in the config's order;
//! * sockets are bound here as `std` sockets, on the starting thread, and
//!   registered with a shard's runtime only on that shard's thread
//!   ([`StdSockets::adopt`]).

use std::net::SocketAddr;
use std::sync::Arc;

use super::socket::{bind_per_shard, bind_tcp, bind_udp, BindError, UdpRole};
use super::stream::listener::Security;
use super::udp::batch::{self, UdpSock};
use crate::config::Config;
use crate::process::http_handover::HttpHandover;
use crate::process::tls;
use crate::proto::server::AddressPair;

/// Connections a TCP or TLS listener holds before they are accepted.
const STREAM_BACKLOG: i32 = 1024;

/// One shard's listening sockets, bound by [`crate::net::start`] before the shard's
/// runtime exists.
#[derive(Default)]
pub(super) struct StdSockets {
    udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    streams: Vec<(SocketAddr, std::net::TcpListener, Security)>,
}

/// The same sockets, registered with the shard's runtime.
pub(super) struct ShardSockets {
    pub(super) udp: Vec<(SocketAddr, UdpSock)>,
    /// TCP and TLS listeners.
    pub(super) streams: Vec<(SocketAddr, tokio::net::TcpListener, Security)>,
}

impl StdSockets {
    /// Registers the sockets with the current (the shard's) runtime.
    pub(super) fn adopt(self) -> std::io::Result<ShardSockets> {
        Ok(ShardSockets {
            udp: self
                .udp
                .into_iter()
                .map(|(a, s)| Ok((a, batch::register(s)?)))
                .collect::<std::io::Result<_>>()?,
            streams: self
                .streams
                .into_iter()
                .map(|(a, l, security)| Ok((a, tokio::net::TcpListener::from_std(l)?, security)))
                .collect::<std::io::Result<_>>()?,
        })
    }
}

/// Binds every UDP listener once per shard (`sockets` has one entry per
/// shard); returns the bound addresses. The listeners are those of
/// `listen.udp`, then for each RFC 5780 address pair the three addresses
/// beside its primary (A1:P2, A2:P1, A2:P2), which the core may answer
/// from (`proto::server::nat_discovery`).
pub(super) fn bind_udp_listeners(config: &Config, sockets: &mut [StdSockets]) -> Result<Vec<SocketAddr>, BindError> {
    let mut udp = Vec::new();
    let alternates = config
        .listen
        .nat_discovery_pairs()
        .into_iter()
        .filter_map(|(primary, alternate)| AddressPair::new(primary, alternate))
        .flat_map(|pair| pair.sockets().into_iter().skip(1));
    for wanted in config.listen.udp.iter().copied().chain(alternates) {
        let bind = |addr, reuse_port| bind_udp(addr, UdpRole::Listener { reuse_port });
        let (bound, per_shard) = bind_per_shard("UDP", wanted, sockets.len(), bind, std::net::UdpSocket::local_addr)?;
        for (shard, socket) in sockets.iter_mut().zip(per_shard) {
            shard.udp.push((bound, socket));
        }
        udp.push(bound);
    }
    Ok(udp)
}

/// Binds every TCP and TLS listener once per shard (`sockets` has one
/// entry per shard), as UDP listeners are; returns the bound TCP and TLS
/// addresses. TLS listeners need `certificates`, and are shared with HTTP
/// when given `http`.
pub(super) fn bind_stream_listeners(
    config: &Config,
    certificates: Option<&Arc<tls::TlsCertificates>>,
    http: Option<HttpHandover>,
    sockets: &mut [StdSockets],
) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>), BindError> {
    let mut tcp = Vec::new();
    let mut tls = Vec::new();
    let plain = config.listen.tcp.iter().map(|a| (*a, Security::Plain));
    let secure = certificates.into_iter().flat_map(|c| {
        config
            .listen
            .tls
            .iter()
            .map(|a| (*a, Security::Tls(c.clone(), http.clone())))
    });
    for (wanted, security) in plain.chain(secure) {
        let (proto, bound_list) = match security {
            Security::Plain => ("TCP", &mut tcp),
            Security::Tls(..) => ("TLS", &mut tls),
        };
        // The kernel spreads connections over the siblings; a data
        // connection that lands on the wrong shard is transferred (see
        // `stream::transfer`).
        let bind = |addr, reuse_port| bind_tcp(addr, reuse_port, STREAM_BACKLOG);
        let (bound, per_shard) = bind_per_shard(proto, wanted, sockets.len(), bind, std::net::TcpListener::local_addr)?;
        for (shard, listener) in sockets.iter_mut().zip(per_shard) {
            shard.streams.push((bound, listener, security.clone()));
        }
        bound_list.push(bound);
    }
    Ok((tcp, tls))
}
