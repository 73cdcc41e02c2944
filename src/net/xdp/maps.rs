//! Typed access to the program's maps: install and remove one route per
//! (client 5-tuple, channel) and per (relayed address, peer), read each
//! route's counters, set the TTL and hop limit, read the verdicts.
//!
//! Each route has a slot of per-CPU counters of its own (`tp_counts`),
//! assigned here: a refresh (a new expiry, the same route) keeps its slot
//! and its counts; a removal deletes the route first and then reads the
//! slot, so the final counts returned are all the program counted but a
//! datagram it was relaying in that instant on another CPU. Freed slots
//! are reused oldest first, and zeroed when reused, so such a late count
//! never lands in another route's numbers while free slots remain.
//!
//! A route is refused here, with [`XdpError`], unless its addresses are
//! all of one family (the program does not translate IPv4 ↔ IPv6; those
//! allocations stay with user space) and its channel number is one a
//! client may bind (0x4000–0x7FFF, as `proto::channel_data` accepts).

use std::collections::{HashMap as StdHashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues};
use aya::Ebpf;

use super::layout::{self, ChannelKey, Config, Count, PeerKey, Route};
use super::XdpError;

/// A client's ChannelData on one channel: what `tp_channels` is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelRoute {
    /// The client's address (the source of its datagrams).
    pub client: SocketAddr,
    /// The server's address the client sends to (a listening address).
    pub server: SocketAddr,
    pub channel: u16,
}

/// A peer's datagrams to a relayed address: what `tp_peers` is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerRoute {
    /// The relayed address as on the wire (the relay socket's local
    /// address, not an advertised one).
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

/// What a route sends instead of what came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// The data alone, from the relayed address to the peer (a client's
    /// ChannelData, stripped).
    ToPeer { relay: SocketAddr, peer: SocketAddr },
    /// ChannelData on `channel`, from the server's address to the client
    /// (a peer's datagram, framed; or relay ↔ relay, a client's
    /// ChannelData re-framed for the other allocation's client).
    ToClient {
        server: SocketAddr,
        client: SocketAddr,
        channel: u16,
    },
}

/// A route's counts, summed over the CPUs: datagrams sent and their
/// application bytes (the data, without a ChannelData header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
}

/// `enum tp_verdict` of `relay.h`: why a frame got its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    TxToPeer,
    TxToClient,
    TxRelayToRelay,
    PassNotIp,
    PassMalformed,
    PassIpOptions,
    PassFragment,
    PassNotUdp,
    PassNoChecksum,
    PassNotChannel,
    PassNoRoute,
    PassChannelLength,
    PassExpired,
    PassBadRoute,
    PassUnconfigured,
    PassFib,
    PassNotForUs,
    PassHeadroom,
}

/// How many [`Verdict`]s there are (`TP_VERDICTS`).
pub const VERDICTS: usize = Verdict::PassHeadroom as usize + 1;

impl Verdict {
    /// Every verdict, in the order of the map's indexes.
    pub const ALL: [Verdict; VERDICTS] = [
        Verdict::TxToPeer,
        Verdict::TxToClient,
        Verdict::TxRelayToRelay,
        Verdict::PassNotIp,
        Verdict::PassMalformed,
        Verdict::PassIpOptions,
        Verdict::PassFragment,
        Verdict::PassNotUdp,
        Verdict::PassNoChecksum,
        Verdict::PassNotChannel,
        Verdict::PassNoRoute,
        Verdict::PassChannelLength,
        Verdict::PassExpired,
        Verdict::PassBadRoute,
        Verdict::PassUnconfigured,
        Verdict::PassFib,
        Verdict::PassNotForUs,
        Verdict::PassHeadroom,
    ];

    /// Its metric label value.
    pub const fn label(self) -> &'static str {
        match self {
            Verdict::TxToPeer => "tx_to_peer",
            Verdict::TxToClient => "tx_to_client",
            Verdict::TxRelayToRelay => "tx_relay_to_relay",
            Verdict::PassNotIp => "pass_not_ip",
            Verdict::PassMalformed => "pass_malformed",
            Verdict::PassIpOptions => "pass_ip_options",
            Verdict::PassFragment => "pass_fragment",
            Verdict::PassNotUdp => "pass_not_udp",
            Verdict::PassNoChecksum => "pass_no_checksum",
            Verdict::PassNotChannel => "pass_not_channel",
            Verdict::PassNoRoute => "pass_no_route",
            Verdict::PassChannelLength => "pass_channel_length",
            Verdict::PassExpired => "pass_expired",
            Verdict::PassBadRoute => "pass_bad_route",
            Verdict::PassUnconfigured => "pass_unconfigured",
            Verdict::PassFib => "pass_fib",
            Verdict::PassNotForUs => "pass_not_for_us",
            Verdict::PassHeadroom => "pass_headroom",
        }
    }
}

/// The maps of a loaded [`super::RelayProgram`].
pub struct RelayMaps {
    channels: HashMap<MapData, ChannelKey, Route>,
    peers: HashMap<MapData, PeerKey, Route>,
    counts: PerCpuArray<MapData, Count>,
    config: Array<MapData, Config>,
    verdicts: PerCpuArray<MapData, u64>,
    cpus: usize,
    channel_slots: StdHashMap<ChannelKey, u32>,
    peer_slots: StdHashMap<PeerKey, u32>,
    free: VecDeque<u32>,
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, XdpError> {
    let map = ebpf.take_map(name).ok_or(XdpError::Missing(name))?;
    T::try_from(map).map_err(XdpError::from)
}

impl RelayMaps {
    pub(super) fn take(ebpf: &mut Ebpf, slots: u32) -> Result<RelayMaps, XdpError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| XdpError::Cpus(e))?;
        Ok(RelayMaps {
            channels: take(ebpf, "tp_channels")?,
            peers: take(ebpf, "tp_peers")?,
            counts: take(ebpf, "tp_counts")?,
            config: take(ebpf, "tp_config")?,
            verdicts: take(ebpf, "tp_verdicts")?,
            cpus,
            channel_slots: StdHashMap::new(),
            peer_slots: StdHashMap::new(),
            free: (0..slots).collect(),
        })
    }

    /// Sets the TTL (IPv4) and hop limit (IPv6) of what the program
    /// sends: the host's defaults, which the user-space path's sockets
    /// get. Until this is set (non-zero) the program passes everything.
    pub fn configure(&mut self, ttl: u8, hop_limit: u8) -> Result<(), XdpError> {
        let config = Config {
            ttl,
            hop_limit,
            pad: [0; 6],
        };
        self.config.set(0, config, 0)?;
        Ok(())
    }

    /// Installs (or refreshes) the route for a client's ChannelData on one
    /// channel, forwarded until `expires_ns` (`CLOCK_MONOTONIC`, the
    /// earlier of the channel's and the permission's expiry).
    pub fn install_channel(&mut self, route: ChannelRoute, out: Outgoing, expires_ns: u64) -> Result<(), XdpError> {
        let key = channel_key(&route)?;
        let value = route_value(key.family, out, expires_ns)?;
        install(
            &mut self.channels,
            &mut self.channel_slots,
            &mut self.free,
            &mut self.counts,
            self.cpus,
            key,
            value,
        )
    }

    /// Installs (or refreshes) the route for a peer's datagrams to a
    /// relayed address: always [`Outgoing::ToClient`].
    pub fn install_peer(&mut self, route: PeerRoute, out: Outgoing, expires_ns: u64) -> Result<(), XdpError> {
        let key = peer_key(&route)?;
        if matches!(out, Outgoing::ToPeer { .. }) {
            return Err(XdpError::PeerToPeer);
        }
        let value = route_value(key.family, out, expires_ns)?;
        install(
            &mut self.peers,
            &mut self.peer_slots,
            &mut self.free,
            &mut self.counts,
            self.cpus,
            key,
            value,
        )
    }

    /// Removes a client's channel route; returns its final counts.
    pub fn remove_channel(&mut self, route: &ChannelRoute) -> Result<Counts, XdpError> {
        let key = channel_key(route)?;
        remove(
            &mut self.channels,
            &mut self.channel_slots,
            &mut self.free,
            &self.counts,
            &key,
        )
    }

    /// Removes a peer route; returns its final counts.
    pub fn remove_peer(&mut self, route: &PeerRoute) -> Result<Counts, XdpError> {
        let key = peer_key(route)?;
        remove(
            &mut self.peers,
            &mut self.peer_slots,
            &mut self.free,
            &self.counts,
            &key,
        )
    }

    /// What a channel route has forwarded so far.
    pub fn channel_counts(&self, route: &ChannelRoute) -> Result<Counts, XdpError> {
        let slot = *self
            .channel_slots
            .get(&channel_key(route)?)
            .ok_or(XdpError::NotInstalled)?;
        read_counts(&self.counts, slot)
    }

    /// What a peer route has forwarded so far.
    pub fn peer_counts(&self, route: &PeerRoute) -> Result<Counts, XdpError> {
        let slot = *self.peer_slots.get(&peer_key(route)?).ok_or(XdpError::NotInstalled)?;
        read_counts(&self.counts, slot)
    }

    /// The program's verdicts so far, summed over the CPUs, indexed by
    /// [`Verdict`].
    pub fn verdicts(&self) -> Result<[u64; VERDICTS], XdpError> {
        let mut out = [0; VERDICTS];
        for (index, total) in (0u32..).zip(out.iter_mut()) {
            *total = self.verdicts.get(&index, 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Channel routes and peer routes installed.
    pub fn route_counts(&self) -> (usize, usize) {
        (self.channel_slots.len(), self.peer_slots.len())
    }

    /// Routes installed, of both kinds.
    pub fn len(&self) -> usize {
        self.channel_slots.len() + self.peer_slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn install<K: aya::Pod + Eq + Hash>(
    map: &mut HashMap<MapData, K, Route>,
    slots: &mut StdHashMap<K, u32>,
    free: &mut VecDeque<u32>,
    counts: &mut PerCpuArray<MapData, Count>,
    cpus: usize,
    key: K,
    mut value: Route,
) -> Result<(), XdpError> {
    if let Some(&slot) = slots.get(&key) {
        value.slot = slot;
        map.insert(key, value, 0)?;
        return Ok(());
    }
    let slot = free.pop_front().ok_or(XdpError::Full)?;
    let zeros = PerCpuValues::try_from(vec![Count::default(); cpus]).map_err(XdpError::Io)?;
    value.slot = slot;
    let installed = counts.set(slot, zeros, 0).and_then(|()| map.insert(key, value, 0));
    if let Err(e) = installed {
        free.push_front(slot);
        return Err(e.into());
    }
    slots.insert(key, slot);
    Ok(())
}

fn remove<K: aya::Pod + Eq + Hash>(
    map: &mut HashMap<MapData, K, Route>,
    slots: &mut StdHashMap<K, u32>,
    free: &mut VecDeque<u32>,
    counts: &PerCpuArray<MapData, Count>,
    key: &K,
) -> Result<Counts, XdpError> {
    let slot = *slots.get(key).ok_or(XdpError::NotInstalled)?;
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => {}
        Err(e) => return Err(e.into()),
    }
    slots.remove(key);
    free.push_back(slot);
    read_counts(counts, slot)
}

fn read_counts(counts: &PerCpuArray<MapData, Count>, slot: u32) -> Result<Counts, XdpError> {
    let per_cpu = counts.get(&slot, 0)?;
    Ok(per_cpu.iter().fold(Counts::default(), |sum, c| Counts {
        packets: sum.packets.saturating_add(c.packets),
        bytes: sum.bytes.saturating_add(c.bytes),
    }))
}

fn channel_number(channel: u16) -> Result<u16, XdpError> {
    match channel {
        0x4000..=0x7FFF => Ok(channel.to_be()),
        _ => Err(XdpError::BadChannel(channel)),
    }
}

fn channel_key(route: &ChannelRoute) -> Result<ChannelKey, XdpError> {
    let (client_ip, client_port, family) = layout::wire(route.client);
    let (server_ip, server_port, server_family) = layout::wire(route.server);
    if family != server_family {
        return Err(XdpError::MixedFamilies);
    }
    Ok(ChannelKey {
        client_ip,
        server_ip,
        client_port,
        server_port,
        channel: channel_number(route.channel)?,
        family,
        pad: 0,
    })
}

fn peer_key(route: &PeerRoute) -> Result<PeerKey, XdpError> {
    let (relay_ip, relay_port, family) = layout::wire(route.relay);
    let (peer_ip, peer_port, peer_family) = layout::wire(route.peer);
    if family != peer_family {
        return Err(XdpError::MixedFamilies);
    }
    Ok(PeerKey {
        relay_ip,
        peer_ip,
        relay_port,
        peer_port,
        family,
        pad: [0; 3],
    })
}

/// The route's value (its slot is filled in by [`install`]).
fn route_value(family: u8, out: Outgoing, expires_ns: u64) -> Result<Route, XdpError> {
    let (src, dst, channel) = match out {
        Outgoing::ToPeer { relay, peer } => (relay, peer, 0),
        Outgoing::ToClient {
            server,
            client,
            channel,
        } => (server, client, channel_number(channel)?),
    };
    let (src_ip, src_port, src_family) = layout::wire(src);
    let (dst_ip, dst_port, dst_family) = layout::wire(dst);
    if src_family != family || dst_family != family {
        return Err(XdpError::MixedFamilies);
    }
    Ok(Route {
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        channel,
        family,
        pad: 0,
        slot: 0,
        pad2: 0,
        expires_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_route_across_families_is_refused() {
        let route = ChannelRoute {
            client: addr("192.0.2.1:5000"),
            server: addr("[2001:db8::1]:3478"),
            channel: 0x4000,
        };
        assert!(matches!(channel_key(&route), Err(XdpError::MixedFamilies)));
        let out = Outgoing::ToPeer {
            relay: addr("[2001:db8::1]:50000"),
            peer: addr("[2001:db8::2]:9"),
        };
        assert!(matches!(
            route_value(layout::FAMILY_V4, out, 1),
            Err(XdpError::MixedFamilies)
        ));
    }

    #[test]
    fn channel_numbers_outside_the_bindable_range_are_refused() {
        for channel in [0, 0x3FFF, 0x8000, 0xFFFF] {
            assert!(matches!(channel_number(channel), Err(XdpError::BadChannel(c)) if c == channel));
        }
        assert_eq!(channel_number(0x4001).unwrap().to_ne_bytes(), [0x40, 0x01]);
        assert_eq!(channel_number(0x7FFF).unwrap().to_ne_bytes(), [0x7F, 0xFF]);
    }

    #[test]
    fn a_to_peer_route_strips_and_a_to_client_route_frames() {
        let to_peer = route_value(
            layout::FAMILY_V4,
            Outgoing::ToPeer {
                relay: addr("192.0.2.1:50000"),
                peer: addr("198.51.100.7:9"),
            },
            7,
        )
        .unwrap();
        assert_eq!(to_peer.channel, 0);
        assert_eq!(to_peer.expires_ns, 7);
        let to_client = route_value(
            layout::FAMILY_V4,
            Outgoing::ToClient {
                server: addr("192.0.2.1:3478"),
                client: addr("203.0.113.5:40000"),
                channel: 0x4abc,
            },
            7,
        )
        .unwrap();
        assert_eq!(to_client.channel.to_ne_bytes(), [0x4a, 0xbc]);
        assert_eq!(to_client.src_port.to_ne_bytes(), 3478u16.to_be_bytes());
    }
}
