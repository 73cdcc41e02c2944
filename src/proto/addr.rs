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
///
/// The id names the shard whose core issued it (and holds the peer
/// connection) in its top 8 bits, and a serial in the low 24, so that the
/// driver can tell from a ConnectionBind alone which shard must serve the
/// data connection (see `net::stream`). RFC 6062 asks only that ids be
/// unique; a core never hands out an id it still holds (see
/// `Server::insert_connection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

impl ConnectionId {
    /// Serials run over `1..=MAX_SERIAL` and then wrap.
    pub const MAX_SERIAL: u32 = (1 << 24) - 1;

    /// Connection `serial` (taken modulo 2^24) of the core of `shard`.
    pub const fn new(shard: ShardId, serial: u32) -> ConnectionId {
        ConnectionId(((shard.0 as u32) << 24) | (serial & Self::MAX_SERIAL))
    }

    /// The shard whose core issued this id. Any u32 names some shard: an
    /// id a client made up may name one that does not run, or one that
    /// never issued it.
    pub const fn shard(self) -> ShardId {
        ShardId((self.0 >> 24) as u8)
    }

    pub const fn serial(self) -> u32 {
        self.0 & Self::MAX_SERIAL
    }
}

/// One of the process's event-loop shards (`server.workers`, at most 255),
/// each running its own core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_id_names_its_shard_and_serial() {
        for shard in [0u8, 1, 3, 254, 255] {
            for serial in [1, 2, 0x00AB_CDEF, ConnectionId::MAX_SERIAL] {
                let id = ConnectionId::new(ShardId(shard), serial);
                assert_eq!(id.shard(), ShardId(shard));
                assert_eq!(id.serial(), serial);
            }
        }
        assert_eq!(ConnectionId::new(ShardId(2), 5).0, 0x0200_0005);
    }

    #[test]
    fn ids_of_two_shards_never_collide() {
        let a: Vec<_> = (1..1000).map(|s| ConnectionId::new(ShardId(0), s)).collect();
        let b: Vec<_> = (1..1000).map(|s| ConnectionId::new(ShardId(1), s)).collect();
        assert!(a.iter().all(|id| !b.contains(id)));
    }

    #[test]
    fn a_serial_beyond_24_bits_does_not_change_the_shard() {
        let id = ConnectionId::new(ShardId(7), ConnectionId::MAX_SERIAL + 2);
        assert_eq!(id.shard(), ShardId(7));
        assert_eq!(id.serial(), 1);
    }
}
