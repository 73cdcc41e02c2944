//! The data plane (RFC 8656 §11, §12): Send indications and ChannelData
//! from clients become [`ToPeer`] routes that borrow the packet, and
//! datagrams from peers become [`ToClient`] routes, framed in place as
//! ChannelData or a Data indication in the headroom the driver left.
//! Nothing here allocates, copies or locks per packet (a configured user
//! byte rate aside, see [`crate::proto::quota::SharedBucket`]).
//!
//! Every relayed packet needs, at the moment it passes: an allocation on
//! its 5-tuple or relay, a live permission for the peer's IP, a relay of
//! the peer's family, and room in the byte rates. Anything else is
//! dropped silently (§11.2: indications get no answer).

use std::ops::Range;
use std::time::Instant;

use tracing::trace;

use super::{next_indication_id, RelayBinder, Server};
use crate::proto::addr::{ClientAddr, Family, PeerAddr, RelayAddr, RelayProtocol, ShardId};
use crate::proto::channel_data;
use crate::proto::stun::{self, attr, Message};

/// A client's payload to forward to a peer through a relay socket.
#[derive(Debug, PartialEq, Eq)]
pub struct ToPeer<'p> {
    pub relay: RelayAddr,
    pub peer: PeerAddr,
    pub payload: &'p [u8],
    /// The peer is a live UDP relay of this server, held by this shard:
    /// the driver hands the payload to it with
    /// [`Server::handle_relay_to_relay`] on that shard instead of sending
    /// it through the kernel (`peer` is then its advertised address).
    pub local: Option<ShardId>,
}

/// A peer's datagram, framed in place, to forward to a client: send
/// `buf[range]` to `client`.
#[derive(Debug, PartialEq, Eq)]
pub struct ToClient {
    pub client: ClientAddr,
    pub range: Range<usize>,
}

/// Bytes of headroom the driver must leave before a peer's payload so that
/// the largest header (a Data indication for an IPv6 peer) fits in place.
pub const PEER_HEADROOM: usize = 48;
/// Bytes after a peer's payload for padding to a 4-byte boundary.
pub const PEER_TAILROOM: usize = 3;

impl<B: RelayBinder> Server<B> {
    pub(super) fn client_channel_data<'p>(
        &mut self,
        client: ClientAddr,
        packet: &'p [u8],
        now: Instant,
    ) -> Option<ToPeer<'p>> {
        let (number, payload) = channel_data::parse(packet).ok()?;
        let allocation = self.allocations.get_mut(&client)?;
        if allocation.protocol != RelayProtocol::Udp {
            return None;
        }
        let channel = allocation
            .channels
            .iter()
            .find(|c| c.number == number && c.expires > now)?;
        let peer = channel.peer;
        let relay = allocation.relays.get(Family::of(peer.0))?;
        if !allocation.permits(peer.0.ip(), now) {
            return None;
        }
        // The channel was checked when bound; one of our relays it names
        // may have gone since.
        if !self.filter.still_reachable(peer.0, RelayProtocol::Udp, &self.live) {
            self.counters.peer_refusals += 1;
            trace!(%client, peer = %peer.0, "ChannelData to a relay that is gone dropped");
            return None;
        }
        if let Err(limit) = allocation.within_rate(payload.len(), now) {
            self.counters.rate_limited[limit as usize].count(payload.len());
            return None;
        }
        allocation.to_peer.count(payload.len());
        Some(ToPeer {
            relay,
            peer,
            payload,
            local: None,
        })
    }

    /// Send indication (RFC 8656 §11.2): silently dropped unless it is
    /// well-formed, comes from an allocation's 5-tuple and the peer has a
    /// permission.
    pub(super) fn send_indication<'p>(
        &mut self,
        client: ClientAddr,
        msg: &Message<'p>,
        now: Instant,
    ) -> Option<ToPeer<'p>> {
        if msg.unknown_required(&mut [0; 1]) > 0 {
            return None;
        }
        let allocation = self.allocations.get_mut(&client)?;
        if allocation.protocol != RelayProtocol::Udp {
            return None;
        }
        let peer = msg.xor_address(attr::XOR_PEER_ADDRESS)?.ok()?;
        let payload = msg.get(attr::DATA)?;
        if !allocation.permits(peer.ip(), now) {
            trace!(%client, %peer, "Send indication without permission dropped");
            return None;
        }
        // Permissions are per IP, but the filter also judges the port (a
        // service port on one of our own addresses), so check it here too.
        if self.filter.check(peer, RelayProtocol::Udp, &self.live).is_err() {
            self.counters.peer_refusals += 1;
            trace!(%client, %peer, "Send indication to a refused peer dropped");
            return None;
        }
        let relay = allocation.relays.get(Family::of(peer))?;
        if let Err(limit) = allocation.within_rate(payload.len(), now) {
            self.counters.rate_limited[limit as usize].count(payload.len());
            return None;
        }
        allocation.to_peer.count(payload.len());
        Some(ToPeer {
            relay,
            peer: PeerAddr(peer),
            payload,
            local: None,
        })
    }

    /// Which shard holds `peer`, if it is a live UDP relay of this server.
    /// Relays of one family share one advertised IP, so a peer with the
    /// sending relay's IP and a live port is one of them.
    pub(super) fn local_relay(&self, from: RelayAddr, peer: PeerAddr) -> Option<ShardId> {
        if peer.0.ip() != from.0.ip() {
            return None;
        }
        self.live.owner(Family::of(peer.0), RelayProtocol::Udp, peer.0.port())
    }

    /// Handles a payload that this server's relay `from` sent to its relay
    /// `to` (a [`ToPeer`] with `local` set), as if `to`'s socket had
    /// received it from `from`: permissions, channels, byte rates and
    /// counters all apply. The framing contract is that of
    /// [`Self::handle_peer_packet`].
    pub fn handle_relay_to_relay(
        &mut self,
        to: RelayAddr,
        from: RelayAddr,
        buf: &mut [u8],
        payload: Range<usize>,
        now: Instant,
    ) -> Option<ToClient> {
        self.counters.relayed_in_process += 1;
        self.handle_peer_packet(to, PeerAddr(from.0), buf, payload, now)
    }

    /// Counts a relay-to-relay payload the driver could not deliver at all
    /// (no such shard, or the sending relay is gone; a full queue falls
    /// back to the kernel and is not counted here).
    pub fn count_relay_handoff_drop(&mut self) {
        self.counters.relay_handoff_drops += 1;
    }

    /// Counts a relay-to-relay payload the driver sent through the kernel
    /// because its shard's queue was full.
    pub fn count_relay_handoff_fallback(&mut self) {
        self.counters.relay_handoff_fallbacks += 1;
    }

    /// Handles a datagram that relay socket `relay` received from `peer`.
    /// The payload is `buf[payload]`; `buf` must have [`PEER_HEADROOM`]
    /// bytes before it and [`PEER_TAILROOM`] after it. On success the
    /// header has been written in place and `buf[range]` is to be sent.
    pub fn handle_peer_packet(
        &mut self,
        relay: RelayAddr,
        peer: PeerAddr,
        buf: &mut [u8],
        payload: Range<usize>,
        now: Instant,
    ) -> Option<ToClient> {
        if payload.end > buf.len() {
            return None;
        }
        let peer = self.config.hairpin.inbound(peer);
        let client = *self.by_relay.get(&relay)?;
        let allocation = self.allocations.get_mut(&client)?;
        if !allocation.permits(peer.0.ip(), now) {
            trace!(%client, peer = %peer.0, "peer packet without permission dropped");
            return None;
        }
        let len = payload.len();
        let len16 = u16::try_from(len).ok()?;
        if let Err(limit) = allocation.within_rate(len, now) {
            self.counters.rate_limited[limit as usize].count(len);
            return None;
        }
        let (start, end) = match allocation.bound_channel_for(peer, now) {
            Some(number) => {
                // ChannelData is padded to 4 bytes on streams only
                // (RFC 8656 §12.5); over UDP the padding would be waste.
                let start = payload.start.checked_sub(channel_data::HEADER_LEN)?;
                let header = buf.get_mut(start..payload.start)?.try_into().ok()?;
                channel_data::write_header(header, number, len16);
                let end = match client.transport.is_stream() {
                    true => payload.end + stun::padding(len),
                    false => payload.end,
                };
                buf.get_mut(payload.end..end)?.fill(0);
                (start, end)
            }
            None => {
                let headroom = buf.get_mut(..payload.start)?;
                let header_len = stun::write_data_indication_header(
                    headroom,
                    peer.0,
                    next_indication_id(&mut self.indication_ids),
                    len,
                )?;
                let end = payload.end + stun::padding(len);
                buf.get_mut(payload.end..end)?.fill(0);
                (payload.start - header_len, end)
            }
        };
        allocation.to_client.count(len);
        Some(ToClient {
            client,
            range: start..end,
        })
    }
}
