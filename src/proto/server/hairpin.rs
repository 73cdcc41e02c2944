//! Relay hairpinning behind a 1:1 NAT (see [`RelayHairpin`]).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use crate::proto::addr::PeerAddr;

/// How this server's own relays reach each other.
///
/// When both sides of a call are relayed by this server, each client sends
/// to the other's *advertised* relay address. Behind a 1:1 NAT (the
/// advertised address is `external_ip`) many clouds do not hairpin that
/// address back to the host, and the call fails. So a packet for one of
/// our relay ports on an advertised address goes to the matching local
/// address instead, and a packet arriving from a local address on a relay
/// port is seen as coming from the advertised one. Permissions, the peer
/// filter and XOR-PEER-ADDRESS therefore keep using the advertised
/// addresses the clients know.
///
/// A UDP payload from one of our relays to another no longer reaches the
/// wire at all (it is handed over inside the process, see
/// `Server::handle_relay_to_relay`), so for UDP the mapping only matters
/// to a datagram that arrives from a local address anyway; RFC 6062
/// Connect to our own TCP relays still goes through the kernel and uses
/// both directions.
#[derive(Clone, Debug)]
pub struct RelayHairpin {
    /// (advertised, local) pairs that differ; usually none.
    pairs: Vec<(IpAddr, IpAddr)>,
    ports: RangeInclusive<u16>,
}

impl Default for RelayHairpin {
    /// No mapping at all.
    fn default() -> Self {
        // No pairs, so the port range is never consulted.
        RelayHairpin::new([], 0..=0)
    }
}

impl RelayHairpin {
    pub fn new(pairs: impl IntoIterator<Item = (IpAddr, IpAddr)>, ports: RangeInclusive<u16>) -> Self {
        RelayHairpin {
            pairs: pairs.into_iter().filter(|(a, l)| a != l).collect(),
            ports,
        }
    }

    /// `addr` with its IP swapped for its partner, if it is one of ours on
    /// a relay port; `to_local` picks the direction.
    fn map(&self, addr: SocketAddr, to_local: bool) -> SocketAddr {
        if self.pairs.is_empty() || !self.ports.contains(&addr.port()) {
            return addr;
        }
        for &(advertised, local) in &self.pairs {
            let (from, to) = if to_local {
                (advertised, local)
            } else {
                (local, advertised)
            };
            if addr.ip() == from {
                return SocketAddr::new(to, addr.port());
            }
        }
        addr
    }

    /// Where a packet for `peer` is actually sent.
    pub(super) fn outbound(&self, peer: PeerAddr) -> PeerAddr {
        PeerAddr(self.map(peer.0, true))
    }

    /// Who a packet that arrived from `peer` counts as coming from.
    pub(super) fn inbound(&self, peer: PeerAddr) -> PeerAddr {
        PeerAddr(self.map(peer.0, false))
    }
}
