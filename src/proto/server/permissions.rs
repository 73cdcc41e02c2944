//! CreatePermission and ChannelBind (RFC 8656 §9, §12): which peers an
//! allocation may talk to, and the channel numbers that name them. Both
//! judge every peer by the relay family (443) and the peer filter (403)
//! before they install anything.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::debug;

use super::allocation::{Channel, Relays};
use super::answer::{ErrorCode, Failure};
use super::request::{ChannelBindRequest, CreatePermissionRequest};
use super::{Authenticated, RelayBinder, Server};
use crate::proto::addr::{ClientAddr, Family, RelayProtocol};
use crate::proto::stats::LimitRefusal;
use crate::proto::stun::Message;

/// RFC 8656 §12: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after a binding expires its number and peer stay
/// unavailable to other bindings for 5 minutes, so late packets of the old
/// binding cannot be delivered to a new one.
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

impl<B: RelayBinder> Server<B> {
    /// Checks a peer address for an allocation relaying `protocol`: it
    /// needs a relay of its family (443: a relay never crosses families)
    /// and the peer filter must allow it (403).
    pub(super) fn check_peer(
        &mut self,
        relays: Relays,
        protocol: RelayProtocol,
        peer: SocketAddr,
    ) -> Result<(), Failure> {
        if relays.get(Family::of(peer)).is_none() {
            return Err(ErrorCode::PeerAddressFamilyMismatch.into());
        }
        self.filter.check(peer, protocol, &self.live).map_err(|refusal| {
            debug!(%peer, reason = refusal.reason(), "peer refused");
            self.counters.peer_refusals += 1;
            Failure::Code(ErrorCode::Forbidden)
        })
    }

    /// CreatePermission (RFC 8656 §9): all XOR-PEER-ADDRESSes are checked
    /// before any is installed, so a refused one installs nothing.
    pub(super) fn create_permission(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let allocation = self.allocation_of(client, auth)?;
        let (relays, protocol) = (allocation.relays, allocation.protocol);
        let request = CreatePermissionRequest::parse(msg)?;
        let mut ips: Vec<IpAddr> = Vec::with_capacity(request.peers.len());
        for peer in request.peers {
            self.check_peer(relays, protocol, peer)?;
            if !ips.contains(&peer.ip()) {
                ips.push(peer.ip());
            }
        }
        let max = self.config.max_permissions;
        let allocation = self.allocation_of(client, auth)?;
        allocation.permissions.retain(|p| p.expires > now);
        let new = ips
            .iter()
            .filter(|ip| !allocation.permissions.iter().any(|p| p.ip == **ip))
            .count();
        if allocation.permissions.len() + new > max {
            return Err(self.refuse(LimitRefusal::Permissions));
        }
        for ip in ips {
            allocation.permit(ip, now);
        }
        self.sync_routes(client, now);
        Ok(self.empty_success(msg, &auth.key))
    }

    /// ChannelBind (RFC 8656 §12.2): binds or refreshes a channel, and
    /// installs or refreshes the peer's permission with it.
    pub(super) fn channel_bind(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let allocation = self.allocation_of(client, auth)?;
        if allocation.protocol != RelayProtocol::Udp {
            return Err(ErrorCode::BadRequest.into());
        }
        let relays = allocation.relays;
        let ChannelBindRequest { number, peer } = ChannelBindRequest::parse(msg)?;
        self.check_peer(relays, RelayProtocol::Udp, peer.0)?;
        let (max_channels, max_permissions) = (self.config.max_channels, self.config.max_permissions);
        let allocation = self.allocation_of(client, auth)?;
        allocation.channels.retain(|c| c.expires + CHANNEL_COOLDOWN > now);
        let by_number = allocation.channels.iter().position(|c| c.number == number);
        let by_peer = allocation.channels.iter().position(|c| c.peer == peer);
        let index = match (by_number, by_peer) {
            (Some(i), Some(j)) if i == j => Some(i),
            (None, None) => None,
            // The number is bound to another peer or the peer to another
            // number (possibly still cooling down): §12.2 says 400.
            _ => {
                debug!(%client, %number, peer = %peer.0, "channel number or peer already bound otherwise");
                return Err(ErrorCode::BadRequest.into());
            }
        };
        allocation.permissions.retain(|p| p.expires > now);
        let needs_permission = !allocation.permissions.iter().any(|p| p.ip == peer.0.ip());
        let channels_full = index.is_none() && allocation.channels.len() >= max_channels;
        if channels_full || needs_permission && allocation.permissions.len() >= max_permissions {
            return Err(self.refuse(match channels_full {
                true => LimitRefusal::Channels,
                false => LimitRefusal::Permissions,
            }));
        }
        let expires = now + CHANNEL_LIFETIME;
        match index {
            Some(i) => allocation.channels[i].expires = expires,
            None => allocation.channels.push(Channel { number, peer, expires }),
        }
        allocation.permit(peer.0.ip(), now);
        self.sync_routes(client, now);
        Ok(self.empty_success(msg, &auth.key))
    }
}
