//! The relays of this server that are live now, on every shard: a set of
//! (family, protocol, port) the cores write when an allocation gains or
//! loses a relay and the peer filter reads for every packet sent to one of
//! the server's own addresses (docs/design.md, "Peer filter"). A port of the
//! relay range that holds no live relay is not a relay: whatever else
//! listens there is the host's, and must stay out of reach.
//!
//! The same table says which shard owns each live relay, so a packet one
//! client sends to another client's relay can be handed to that relay's
//! shard inside the process (see `net::relay::cross_shard`).
//!
//! One atomic slot per (family, protocol, port): a lookup is one relaxed
//! load, with no lock, from any shard. Relaxed is enough: a relay that
//! appears or goes a moment late on another shard is like a packet that
//! raced the Allocate or the delete, and each slot has one writer at a
//! time (the shard that owns the relay; the driver hands a port to one
//! relay at a time).
//!
//! Invariant: a slot names a shard exactly while that shard's core holds
//! an allocation with that relay (a reserved EVEN-PORT partner is not live
//! until an allocation claims it).

use std::sync::atomic::{AtomicU16, Ordering};

use super::addr::{Family, RelayProtocol, ShardId};

const PORTS: usize = u16::MAX as usize + 1;

pub struct LiveRelays {
    /// Indexed by [`Self::set`]: IPv4/IPv6 × UDP/TCP, one slot per port:
    /// 0 when the port is no live relay, else the owning shard plus one.
    owners: [Box<[AtomicU16]>; 4],
}

impl Default for LiveRelays {
    fn default() -> Self {
        LiveRelays {
            owners: std::array::from_fn(|_| (0..PORTS).map(|_| AtomicU16::new(0)).collect()),
        }
    }
}

impl std::fmt::Debug for LiveRelays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self
            .owners
            .iter()
            .flatten()
            .filter(|slot| slot.load(Ordering::Relaxed) != 0)
            .count();
        write!(f, "LiveRelays({live} live)")
    }
}

impl LiveRelays {
    fn set(family: Family, protocol: RelayProtocol) -> usize {
        match (family, protocol) {
            (Family::V4, RelayProtocol::Udp) => 0,
            (Family::V4, RelayProtocol::Tcp) => 1,
            (Family::V6, RelayProtocol::Udp) => 2,
            (Family::V6, RelayProtocol::Tcp) => 3,
        }
    }

    fn slot(&self, family: Family, protocol: RelayProtocol, port: u16) -> &AtomicU16 {
        &self.owners[Self::set(family, protocol)][usize::from(port)]
    }

    /// Marks the relay live, owned by `owner`.
    pub fn insert(&self, family: Family, protocol: RelayProtocol, port: u16, owner: ShardId) {
        self.slot(family, protocol, port)
            .store(u16::from(owner.0) + 1, Ordering::Relaxed);
    }

    pub fn remove(&self, family: Family, protocol: RelayProtocol, port: u16) {
        self.slot(family, protocol, port).store(0, Ordering::Relaxed);
    }

    pub fn contains(&self, family: Family, protocol: RelayProtocol, port: u16) -> bool {
        self.owner(family, protocol, port).is_some()
    }

    /// The shard that holds the live relay, if it is one.
    pub fn owner(&self, family: Family, protocol: RelayProtocol, port: u16) -> Option<ShardId> {
        let slot = self.slot(family, protocol, port).load(Ordering::Relaxed);
        let shard = slot.checked_sub(1)?;
        u8::try_from(shard).ok().map(ShardId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_is_live_between_insert_and_remove_in_its_family_and_protocol_only() {
        let live = LiveRelays::default();
        live.insert(Family::V4, RelayProtocol::Udp, 50_001, ShardId(0));
        live.insert(Family::V6, RelayProtocol::Tcp, 65_535, ShardId(254));
        assert!(live.contains(Family::V4, RelayProtocol::Udp, 50_001));
        assert!(!live.contains(Family::V4, RelayProtocol::Tcp, 50_001));
        assert!(!live.contains(Family::V6, RelayProtocol::Udp, 50_001));
        assert!(!live.contains(Family::V4, RelayProtocol::Udp, 50_000));
        assert!(live.contains(Family::V6, RelayProtocol::Tcp, 65_535));
        assert_eq!(live.owner(Family::V4, RelayProtocol::Udp, 50_001), Some(ShardId(0)));
        assert_eq!(live.owner(Family::V6, RelayProtocol::Tcp, 65_535), Some(ShardId(254)));
        assert_eq!(live.owner(Family::V4, RelayProtocol::Udp, 50_000), None);
        live.remove(Family::V4, RelayProtocol::Udp, 50_001);
        assert!(!live.contains(Family::V4, RelayProtocol::Udp, 50_001));
        assert_eq!(format!("{live:?}"), "LiveRelays(1 live)");
    }
}
