//! The relays of this server that are live now, on every shard: a set of
//! (family, protocol, port) the cores write when an allocation gains or
//! loses a relay and the peer filter reads for every packet sent to one of
//! the server's own addresses (DESIGN.md, "Peer filter"). A port of the
//! relay range that holds no live relay is not a relay: whatever else
//! listens there is the host's, and must stay out of reach.
//!
//! One bit per (family, protocol, port), in atomics: a lookup is one
//! relaxed load, with no lock, from any shard. Relaxed is enough: a relay
//! that appears or goes a moment late on another shard is like a packet
//! that raced the Allocate or the delete, and each bit has one writer at a
//! time (the shard that owns the relay; the driver hands a port to one
//! relay at a time).
//!
//! Invariant: a bit is set exactly while some core holds an allocation
//! with that relay (a reserved EVEN-PORT partner is not live until an
//! allocation claims it).

use std::sync::atomic::{AtomicU64, Ordering};

use super::addr::{Family, RelayProtocol};

const WORDS: usize = (u16::MAX as usize + 1) / 64;

pub struct LiveRelays {
    /// Indexed by [`Self::set`]: IPv4/IPv6 × UDP/TCP, 65,536 bits each.
    bits: [Box<[AtomicU64]>; 4],
}

impl Default for LiveRelays {
    fn default() -> Self {
        LiveRelays {
            bits: std::array::from_fn(|_| (0..WORDS).map(|_| AtomicU64::new(0)).collect()),
        }
    }
}

impl std::fmt::Debug for LiveRelays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live: u32 = self
            .bits
            .iter()
            .flatten()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum();
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

    fn word(&self, family: Family, protocol: RelayProtocol, port: u16) -> (&AtomicU64, u64) {
        let words = &self.bits[Self::set(family, protocol)];
        (&words[usize::from(port) / 64], 1 << (port % 64))
    }

    pub fn insert(&self, family: Family, protocol: RelayProtocol, port: u16) {
        let (word, bit) = self.word(family, protocol, port);
        word.fetch_or(bit, Ordering::Relaxed);
    }

    pub fn remove(&self, family: Family, protocol: RelayProtocol, port: u16) {
        let (word, bit) = self.word(family, protocol, port);
        word.fetch_and(!bit, Ordering::Relaxed);
    }

    pub fn contains(&self, family: Family, protocol: RelayProtocol, port: u16) -> bool {
        let (word, bit) = self.word(family, protocol, port);
        word.load(Ordering::Relaxed) & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_is_live_between_insert_and_remove_in_its_family_and_protocol_only() {
        let live = LiveRelays::default();
        live.insert(Family::V4, RelayProtocol::Udp, 50_001);
        live.insert(Family::V6, RelayProtocol::Tcp, 65_535);
        assert!(live.contains(Family::V4, RelayProtocol::Udp, 50_001));
        assert!(!live.contains(Family::V4, RelayProtocol::Tcp, 50_001));
        assert!(!live.contains(Family::V6, RelayProtocol::Udp, 50_001));
        assert!(!live.contains(Family::V4, RelayProtocol::Udp, 50_000));
        assert!(live.contains(Family::V6, RelayProtocol::Tcp, 65_535));
        live.remove(Family::V4, RelayProtocol::Udp, 50_001);
        assert!(!live.contains(Family::V4, RelayProtocol::Udp, 50_001));
        assert_eq!(format!("{live:?}"), "LiveRelays(1 live)");
    }
}
