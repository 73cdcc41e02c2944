//! The vocabulary of the core: who talks to the server over what, and the
//! addresses a relay has and talks to (RFC 8656 §2). Newtypes, so that a
//! client address, a relayed address and a peer address cannot be swapped
//! by accident.

use std::fmt;
use std::net::SocketAddr;

/// How a client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    /// Metric label value.
    pub const fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// True for the transports that carry STUN framed on a byte stream
    /// (RFC 8656 §12.5: ChannelData is padded there).
    pub const fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

/// A client's 5-tuple: the transport, the server address it reached and
/// its own address. One allocation at most per `ClientAddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientAddr {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}->{}", self.transport, self.remote, self.local)
    }
}

/// A relayed transport address as advertised to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr(pub SocketAddr);

/// A peer's transport address, as seen by a relay socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr(pub SocketAddr);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// What a relayed transport address carries: UDP datagrams (RFC 8656) or
/// TCP connections (RFC 6062).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayProtocol {
    Udp,
    Tcp,
}

/// A peer connection of a TCP allocation (RFC 6062 CONNECTION-ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

/// One of the process's event-loop shards (`server.workers`, at most 255),
/// each running its own core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u8);
