//! STUN and TURN requests parsed once into typed values, so that the handlers read
//! as policy. Each parser checks only what the request's attributes say
//! on their own (presence, size, values, combinations the RFC forbids) and
//! answers 400 (or the code the RFC names) for a malformed one; what
//! depends on the server's state (an allocation, a permission, the peer
//! filter, a quota) is the handler's.
//!
//! A handler parses after the state checks that the RFC orders first (an
//! Allocate on a 5-tuple that has an allocation is 437 whatever its
//! attributes; a request that needs an allocation gets 437 without one).

use std::net::SocketAddr;

use super::answer::{ErrorCode, Failure};
use crate::proto::addr::{ConnectionId, Family, PeerAddr, RelayProtocol, Transport};
use crate::proto::channel_data::ChannelNumber;
use crate::proto::stun::{attr, Message};

/// REQUESTED-TRANSPORT protocol numbers (RFC 8656 §18.11, RFC 6062 §6.2).
const PROTOCOL_UDP: u8 = 17;
const PROTOCOL_TCP: u8 = 6;
/// Address family values (RFC 8656 §18.1).
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Allocate (RFC 8656 §7.2, RFC 6062 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AllocateRequest {
    pub protocol: RelayProtocol,
    /// EVEN-PORT, and whether its R bit asks to reserve the next port.
    pub even_port: Option<bool>,
    /// RESERVATION-TOKEN: claim the port reserved under it.
    pub reservation: Option<u64>,
    /// REQUESTED-ADDRESS-FAMILY (IPv4 if absent).
    pub family: Option<Family>,
    /// ADDITIONAL-ADDRESS-FAMILY: a dual allocation with an IPv6 relay too.
    pub additional_v6: bool,
    /// LIFETIME in seconds, if present.
    pub lifetime: Option<u32>,
}

impl AllocateRequest {
    /// In the order of RFC 8656 §7.2. `over` is the client's transport: a
    /// TCP relay needs a TCP or TLS control connection (RFC 6062 §5.1).
    pub fn parse(msg: &Message<'_>, over: Transport) -> Result<AllocateRequest, Failure> {
        let protocol = match msg.get(attr::REQUESTED_TRANSPORT) {
            Some([PROTOCOL_UDP, _, _, _]) => RelayProtocol::Udp,
            Some([PROTOCOL_TCP, _, _, _]) => RelayProtocol::Tcp,
            Some([_, _, _, _]) => return Err(ErrorCode::UnsupportedTransport.into()),
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        // A TCP allocation has no use for even ports, reservations or
        // DONT-FRAGMENT; we also keep it to one family.
        let udp_only = [
            attr::EVEN_PORT,
            attr::RESERVATION_TOKEN,
            attr::DONT_FRAGMENT,
            attr::ADDITIONAL_ADDRESS_FAMILY,
        ];
        if protocol == RelayProtocol::Tcp && (over == Transport::Udp || udp_only.iter().any(|a| msg.has(*a))) {
            return Err(ErrorCode::BadRequest.into());
        }
        let even_port = match msg.get(attr::EVEN_PORT) {
            None => None,
            Some([flags]) => Some(flags & 0x80 != 0),
            Some(_) => return Err(ErrorCode::BadRequest.into()),
        };
        let reservation = match msg.get(attr::RESERVATION_TOKEN) {
            None => None,
            Some(t) => Some(u64::from_be_bytes(t.try_into().map_err(|_| ErrorCode::BadRequest)?)),
        };
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(value) => Some(address_family(value)?.ok_or(ErrorCode::AddressFamilyNotSupported)?),
        };
        // Only IPv6 may be "additional" (§7.2).
        let additional_v6 = match msg.get(attr::ADDITIONAL_ADDRESS_FAMILY) {
            None => false,
            Some(value) => match address_family(value)? {
                Some(Family::V6) => true,
                _ => return Err(ErrorCode::BadRequest.into()),
            },
        };
        // These combinations are contradictory (§7.2).
        if reservation.is_some() && (even_port.is_some() || family.is_some() || additional_v6)
            || additional_v6 && family.is_some()
        {
            return Err(ErrorCode::BadRequest.into());
        }
        Ok(AllocateRequest {
            protocol,
            even_port,
            reservation,
            family,
            additional_v6,
            lifetime: lifetime(msg)?,
        })
    }
}

/// Refresh (RFC 8656 §7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RefreshRequest {
    /// LIFETIME in seconds, if present; 0 deletes.
    pub lifetime: Option<u32>,
    /// REQUESTED-ADDRESS-FAMILY: the one family of a dual allocation this
    /// refresh is about.
    pub family: Option<Family>,
}

impl RefreshRequest {
    pub fn parse(msg: &Message<'_>) -> Result<RefreshRequest, Failure> {
        let lifetime = lifetime(msg)?;
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(value) => Some(address_family(value)?.ok_or(ErrorCode::BadRequest)?),
        };
        Ok(RefreshRequest { lifetime, family })
    }
}

/// CreatePermission (RFC 8656 §9.2): one or more XOR-PEER-ADDRESSes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CreatePermissionRequest {
    /// At most [`crate::proto::stun::MAX_ATTRIBUTES`], never empty.
    pub peers: Vec<SocketAddr>,
}

impl CreatePermissionRequest {
    pub fn parse(msg: &Message<'_>) -> Result<CreatePermissionRequest, Failure> {
        let peers = msg
            .xor_addresses(attr::XOR_PEER_ADDRESS)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ErrorCode::BadRequest)?;
        if peers.is_empty() {
            return Err(ErrorCode::BadRequest.into());
        }
        Ok(CreatePermissionRequest { peers })
    }
}

/// ChannelBind (RFC 8656 §12.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ChannelBindRequest {
    pub number: ChannelNumber,
    pub peer: PeerAddr,
}

impl ChannelBindRequest {
    pub fn parse(msg: &Message<'_>) -> Result<ChannelBindRequest, Failure> {
        let number = match msg.get(attr::CHANNEL_NUMBER) {
            Some([a, b, _, _]) => ChannelNumber::new(u16::from_be_bytes([*a, *b])).ok_or(ErrorCode::BadRequest)?,
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        Ok(ChannelBindRequest {
            number,
            peer: peer(msg)?,
        })
    }
}

/// Connect (RFC 6062 §5.2): the peer to open a TCP connection to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConnectRequest {
    pub peer: PeerAddr,
}

impl ConnectRequest {
    pub fn parse(msg: &Message<'_>) -> Result<ConnectRequest, Failure> {
        Ok(ConnectRequest { peer: peer(msg)? })
    }
}

/// ConnectionBind (RFC 6062 §5.4): the peer connection this new
/// connection is to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConnectionBindRequest {
    pub id: ConnectionId,
}

impl ConnectionBindRequest {
    pub fn parse(msg: &Message<'_>) -> Result<ConnectionBindRequest, Failure> {
        match msg.u32_attr(attr::CONNECTION_ID) {
            Some(Ok(id)) => Ok(ConnectionBindRequest { id: ConnectionId(id) }),
            _ => Err(ErrorCode::BadRequest.into()),
        }
    }
}

/// What a Binding request asks of its answer beyond RFC 8489 (RFC 5780
/// §6.1, §7): where it leaves from, where it goes, how it is padded.
/// Which of these attributes a listener understands at all is the
/// handler's (`super::binding`); this reads their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct BindingRequest {
    /// CHANGE-REQUEST's "change IP" (A) and "change port" (B) flags (§7.2).
    pub change_ip: bool,
    pub change_port: bool,
    /// RESPONSE-PORT (§7.5): the port of the request's source IP the
    /// answer goes to.
    pub response_port: Option<u16>,
    /// The length of the request's PADDING (§7.6).
    pub padding: Option<usize>,
}

/// CHANGE-REQUEST's flags in the last byte of its 32 bits (RFC 5780 §7.2).
const CHANGE_IP: u8 = 0x04;
const CHANGE_PORT: u8 = 0x02;

impl BindingRequest {
    /// 400 for a CHANGE-REQUEST or RESPONSE-PORT that is not 4 bytes, for
    /// RESPONSE-PORT 0 (no datagram can go there), and for RESPONSE-PORT
    /// with PADDING (§6.1: a padded answer redirected elsewhere would be
    /// an amplifier aimed at the request's source, §10).
    pub fn parse(msg: &Message<'_>) -> Result<BindingRequest, Failure> {
        let (change_ip, change_port) = change_flags(msg)?;
        let response_port = match msg.get(attr::RESPONSE_PORT) {
            None => None,
            Some(&[hi, lo, _, _]) if u16::from_be_bytes([hi, lo]) != 0 => Some(u16::from_be_bytes([hi, lo])),
            Some(_) => return Err(ErrorCode::BadRequest.into()),
        };
        let padding = msg.get(attr::PADDING).map(<[u8]>::len);
        if response_port.is_some() && padding.is_some() {
            return Err(ErrorCode::BadRequest.into());
        }
        Ok(BindingRequest {
            change_ip,
            change_port,
            response_port,
            padding,
        })
    }
}

/// CHANGE-REQUEST's (change IP, change port), both false without one; the
/// one attribute of RFC 5780 an RFC 3489 client sends too.
pub(super) fn change_flags(msg: &Message<'_>) -> Result<(bool, bool), Failure> {
    match msg.get(attr::CHANGE_REQUEST) {
        None => Ok((false, false)),
        Some(&[_, _, _, flags]) => Ok((flags & CHANGE_IP != 0, flags & CHANGE_PORT != 0)),
        Some(_) => Err(ErrorCode::BadRequest.into()),
    }
}

/// The one XOR-PEER-ADDRESS of a request that needs exactly one.
fn peer(msg: &Message<'_>) -> Result<PeerAddr, Failure> {
    match msg.xor_address(attr::XOR_PEER_ADDRESS) {
        Some(Ok(peer)) => Ok(PeerAddr(peer)),
        _ => Err(ErrorCode::BadRequest.into()),
    }
}

/// LIFETIME in seconds, if present.
fn lifetime(msg: &Message<'_>) -> Result<Option<u32>, Failure> {
    msg.u32_attr(attr::LIFETIME)
        .transpose()
        .map_err(|_| ErrorCode::BadRequest.into())
}

/// The value of REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY
/// (RFC 8656 §18.1, §18.13): `Ok(None)` for a family this server does not
/// know, 400 for a value of the wrong size.
fn address_family(value: &[u8]) -> Result<Option<Family>, Failure> {
    match value {
        [FAMILY_V4, _, _, _] => Ok(Some(Family::V4)),
        [FAMILY_V6, _, _, _] => Ok(Some(Family::V6)),
        [_, _, _, _] => Ok(None),
        _ => Err(ErrorCode::BadRequest.into()),
    }
}

#[cfg(test)]
mod tests;
