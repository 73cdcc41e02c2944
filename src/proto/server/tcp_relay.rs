//! TCP relays (RFC 6062): Connect, ConnectionBind, incoming peer
//! connections and their lifecycle. TCP allocations relay byte streams,
//! not datagrams: the core keeps the state of each peer connection (being
//! connected, waiting for its ConnectionBind, bound to a data connection)
//! and tells the driver to connect, splice or close through [`Effect`]s;
//! the bytes themselves never pass through the core.
//!
//! Invariants:
//! * `Server::connections` holds every peer connection, each listed in its
//!   allocation's `connections` (while the allocation lives);
//! * a `Pending` connection has exactly one `Timer::Connection` with its
//!   deadline, and no other state has one;
//! * removing a connection always emits `Effect::ClosePeerConnection`, so
//!   the driver never keeps a stream the core forgot;
//! * a connection is only inserted where there is room: its allocation
//!   holds fewer than `max_peer_connections_per_allocation` (checked by a
//!   `debug_assert` in `insert_connection`) and every shard's core
//!   together fewer than `max_peer_connections` (the shared count of
//!   [`crate::proto::quota`], taken before the insert and given back by
//!   `remove_connection`). A reload that lowers them keeps what is open.
//!
//! Spliced bytes are not the core's to carry, but they are its to count
//! and to pace: the driver reports every read of a splice with
//! [`Server::handle_spliced_bytes`] before it writes the bytes on, and the
//! core counts them as the allocation's traffic (one "packet" per read)
//! against its byte rates, telling the driver to wait where a datagram
//! would be dropped, since a stream must not lose bytes: the driver stops
//! reading meanwhile, and TCP's flow control slows the sender.
//!
//! Beyond the caps a Connect gets 508 (the 508 of RFC 8656 §19, as for
//! permissions and channels) and a peer connecting in is refused before
//! the client hears of it; both are counted by [`LimitRefusal`].

use std::time::{Duration, Instant};

use crate::proto::stun::Integrity;
use tracing::{debug, info, trace};

use super::allocation::Allocation;
use super::answer::{ErrorCode, Failure};
use super::request::{ConnectRequest, ConnectionBindRequest};
use super::{next_indication_id, Authenticated, Effect, RelayBinder, Server, Timer};
use crate::proto::addr::{ClientAddr, ConnectionId, Family, PeerAddr, RelayAddr, RelayProtocol, ShardId, Transport};
use crate::proto::auth::NonceCheck;
use crate::proto::method::Method;
use crate::proto::quota::MIN_BURST;
use crate::proto::stats::{LimitRefusal, REFUSALS};
use crate::proto::stun::{attr, method, Class, Message, MessageWriter, TransactionId};

/// RFC 6062 §5.2/§5.3: a peer connection must be bound to a data
/// connection (ConnectionBind) within 30 s, and an outgoing connect may
/// take at most that long.
pub const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes the driver may report per [`Server::handle_spliced_bytes`]
/// call: the smallest burst of a byte rate, so a full bucket always
/// holds one read.
pub const MAX_SPLICE_CHUNK: usize = MIN_BURST as usize;

/// Which way bytes cross a splice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceDirection {
    /// From the data connection to the peer.
    ToPeer,
    /// From the peer to the data connection.
    ToClient,
}

/// What the driver does with bytes it read from one side of a splice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceVerdict {
    /// Counted: write them to the other side.
    Forward,
    /// A byte rate is spent: hold them, read no more from that side, and
    /// report them again at this instant. Nothing was counted.
    WaitUntil(Instant),
    /// The core knows no spliced connection of this id (it was closed):
    /// end the splice.
    Close,
}

/// The shard that holds the peer connection `frame` binds, if `frame` is
/// a ConnectionBind request (RFC 6062 §5.4) with a CONNECTION-ID: the
/// shard named in the id (see [`ConnectionId`]), whether or not it runs
/// or issued the id. Nothing is checked beyond the shape: the driver asks
/// this of a stream's frames before any core has seen them, to hand the
/// connection to that shard, whose core then judges the request.
///
/// Cheap on anything else: two bytes are compared before a parse.
pub fn connection_bind_shard(frame: &[u8]) -> Option<ShardId> {
    // A request's message type is the method with both class bits zero.
    if frame.get(..2)? != method::CONNECTION_BIND.to_be_bytes() {
        return None;
    }
    let msg = Message::parse(frame).ok()?;
    if msg.class() != Class::Request || msg.method() != method::CONNECTION_BIND {
        return None;
    }
    let ConnectionBindRequest { id } = ConnectionBindRequest::parse(&msg).ok()?;
    Some(id.shard())
}

/// A TCP peer connection of an allocation (RFC 6062).
pub(super) struct PeerConnection {
    pub(super) allocation: ClientAddr,
    pub(super) peer: PeerAddr,
    pub(super) state: PeerConnectionState,
}

pub(super) enum PeerConnectionState {
    /// Our Connect to the peer is under way; the request waits for the
    /// answer, signed with this key.
    Connecting { request: TransactionId, key: Integrity },
    /// Connected, waiting for a ConnectionBind until `expires`.
    Pending { expires: Instant },
    /// Spliced with this data connection.
    Bound { data: ClientAddr },
}

impl<B: RelayBinder> Server<B> {
    /// A peer connected to TCP relay `relay` (RFC 6062 §5.3). If its
    /// allocation permits the peer, the client is told with a
    /// ConnectionAttempt indication and the returned id names the
    /// connection from now on; otherwise the driver closes it.
    pub fn handle_incoming_peer_connection(
        &mut self,
        relay: RelayAddr,
        peer: PeerAddr,
        now: Instant,
    ) -> Option<ConnectionId> {
        let peer = self.config.hairpin.inbound(peer);
        let client = *self.by_relay.get(&relay)?;
        let allocation = self.allocations.get(&client)?;
        if allocation.protocol != RelayProtocol::Tcp || !allocation.permits(peer.0.ip(), now) {
            debug!(%client, peer = %peer.0, "incoming peer connection refused");
            return None;
        }
        if let Err(why) = self.reserve_connection(client) {
            self.count_refusal(why);
            debug!(%client, peer = %peer.0, limit = REFUSALS[why as usize], "incoming peer connection refused");
            return None;
        }
        let expires = now + CONNECTION_BIND_TIMEOUT;
        let id = self.insert_connection(client, peer, PeerConnectionState::Pending { expires });
        self.timers.insert((expires, Timer::Connection(id)));
        let mut bytes = Vec::with_capacity(64);
        let mut w = MessageWriter::new(
            &mut bytes,
            Class::Indication,
            method::CONNECTION_ATTEMPT,
            next_indication_id(&mut self.indication_ids),
        );
        w.xor_address(attr::XOR_PEER_ADDRESS, peer.0)
            .u32(attr::CONNECTION_ID, id.0);
        w.finish(None, true);
        self.effects.push_back(Effect::Transmit { to: client, bytes });
        Some(id)
    }

    /// The outcome of an [`Effect::ConnectPeer`]: answers the waiting
    /// Connect request with the CONNECTION-ID or 447 (RFC 6062 §5.2).
    /// Returns whether the driver keeps the stream it connected: false
    /// when the connect failed, and when the core no longer waits for it
    /// (its allocation went away meanwhile, and with it the connection,
    /// whose `ClosePeerConnection` the driver has already seen), so that
    /// a late connect never leaves a stream nobody will close.
    #[must_use]
    pub fn handle_peer_connect_result(&mut self, id: ConnectionId, connected: bool, now: Instant) -> bool {
        let Some(connection) = self.connections.get_mut(&id) else {
            debug!(id = id.0, connected, "connect finished for a forgotten peer connection");
            return false;
        };
        let expires = now + CONNECTION_BIND_TIMEOUT;
        let previous = std::mem::replace(&mut connection.state, PeerConnectionState::Pending { expires });
        let PeerConnectionState::Connecting { request, key } = previous else {
            // Reported twice: the connection has its stream already.
            connection.state = previous;
            return false;
        };
        let client = connection.allocation;
        let mut bytes = Vec::with_capacity(96);
        let class = if connected { Class::Success } else { Class::Error };
        let mut w = MessageWriter::new(&mut bytes, class, method::CONNECT, request);
        if connected {
            w.u32(attr::CONNECTION_ID, id.0);
            self.timers.insert((expires, Timer::Connection(id)));
        } else {
            let code = ErrorCode::ConnectionTimeoutOrFailure;
            w.error_code(code.code(), code.reason());
        }
        self.finish_authenticated(w, &key);
        let code = if connected {
            200
        } else {
            ErrorCode::ConnectionTimeoutOrFailure.code()
        };
        self.counters.request(Some(Method::Connect), code);
        self.effects.push_back(Effect::Transmit { to: client, bytes });
        if !connected {
            self.remove_connection(id);
        }
        connected
    }

    /// `len` bytes (at most [`MAX_SPLICE_CHUNK`]) were read from one side
    /// of spliced connection `id`, going `direction`: counts them as the
    /// allocation's traffic if its byte rates hold them. Emits no effect.
    #[must_use]
    pub fn handle_spliced_bytes(
        &mut self,
        id: ConnectionId,
        direction: SpliceDirection,
        len: usize,
        now: Instant,
    ) -> SpliceVerdict {
        let Some(connection) = self.connections.get(&id) else {
            return SpliceVerdict::Close;
        };
        if !matches!(connection.state, PeerConnectionState::Bound { .. }) {
            return SpliceVerdict::Close;
        }
        let Some(allocation) = self.allocations.get_mut(&connection.allocation) else {
            return SpliceVerdict::Close;
        };
        if let Err(at) = allocation.stream_within_rate(len.min(MAX_SPLICE_CHUNK), now) {
            trace!(id = id.0, len, "splice waits for its byte rate");
            return SpliceVerdict::WaitUntil(at);
        }
        match direction {
            SpliceDirection::ToPeer => allocation.to_peer.count(len),
            SpliceDirection::ToClient => allocation.to_client.count(len),
        }
        SpliceVerdict::Forward
    }

    /// The peer side of connection `id` closed (or failed).
    pub fn handle_peer_connection_closed(&mut self, id: ConnectionId) {
        if self.connections.contains_key(&id) {
            self.remove_connection(id);
        }
    }

    /// The bind timer of connection `id` fired (and was taken off the
    /// queue): a connection still waiting for its ConnectionBind goes.
    pub(super) fn expire_pending_connection(&mut self, id: ConnectionId) {
        if matches!(self.connections.get(&id), Some(c) if matches!(c.state, PeerConnectionState::Pending { .. })) {
            debug!(id = id.0, "peer connection not bound in time");
            self.remove_connection(id);
        }
    }

    /// Stream connection `client` closed: if it was the data connection of
    /// a peer connection, that peer connection goes too.
    pub(super) fn close_data_connection(&mut self, client: ClientAddr) {
        let spliced = self.connections.iter().find_map(|(id, c)| match c.state {
            PeerConnectionState::Bound { data } if data == client => Some(*id),
            _ => None,
        });
        if let Some(id) = spliced {
            self.remove_connection(id);
        }
    }

    /// Connect (RFC 6062 §5.2): asks the driver to connect the TCP relay
    /// to a permitted peer; the answer follows the connect's outcome.
    pub(super) fn connect(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<(), Failure> {
        let allocation = self.allocation_of(client, auth)?;
        if allocation.protocol != RelayProtocol::Tcp {
            return Err(ErrorCode::BadRequest.into());
        }
        let relays = allocation.relays;
        let ConnectRequest { peer } = ConnectRequest::parse(msg)?;
        self.check_peer(relays, RelayProtocol::Tcp, peer.0)?;
        let allocation = self.allocation_of(client, auth)?;
        // RFC 6062 leans on TURN permissions: connecting out needs one,
        // just like sending a datagram would.
        if !allocation.permits(peer.0.ip(), now) {
            return Err(ErrorCode::Forbidden.into());
        }
        let connections = &self.connections;
        let connected = |a: &Allocation| {
            a.connections
                .iter()
                .any(|id| connections.get(id).is_some_and(|c| c.peer == peer))
        };
        if self.allocations.get(&client).is_some_and(|a| connected(a)) {
            return Err(ErrorCode::ConnectionAlreadyExists.into());
        }
        let relay = relays
            .get(Family::of(peer.0))
            .ok_or(ErrorCode::PeerAddressFamilyMismatch)?;
        if let Err(why) = self.reserve_connection(client) {
            return Err(self.refuse(why));
        }
        let state = PeerConnectionState::Connecting {
            request: msg.transaction_id(),
            key: auth.key.clone(),
        };
        let id = self.insert_connection(client, peer, state);
        let wire_peer = self.config.hairpin.outbound(peer);
        self.effects.push_back(Effect::ConnectPeer {
            id,
            relay,
            peer: wire_peer,
        });
        Ok(())
    }

    /// ConnectionBind (RFC 6062 §5.4), on a new connection of the same
    /// user: that connection becomes the data connection of a pending
    /// peer connection.
    pub(super) fn connection_bind(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
    ) -> Result<(), Failure> {
        if client.transport == Transport::Udp || self.allocations.contains_key(&client) {
            return Err(ErrorCode::BadRequest.into());
        }
        let ConnectionBindRequest { id } = ConnectionBindRequest::parse(msg)?;
        let connection = self.connections.get_mut(&id).ok_or(ErrorCode::BadRequest)?;
        let PeerConnectionState::Pending { expires } = connection.state else {
            return Err(ErrorCode::BadRequest.into());
        };
        let owner = self.allocations.get(&connection.allocation).map(|a| &*a.username);
        if owner != Some(&*auth.username) {
            return Err(ErrorCode::WrongCredentials.into());
        }
        connection.state = PeerConnectionState::Bound { data: client };
        self.timers.remove(&(expires, Timer::Connection(id)));
        let answer = self.empty_success(msg, &auth.key);
        self.count_success(Method::ConnectionBind);
        // The answer goes out framed; the splice starts right after it.
        self.effects.push_back(Effect::Transmit {
            to: client,
            bytes: answer,
        });
        self.effects.push_back(Effect::Splice { id, data: client });
        info!(%client, id = id.0, "data connection bound");
        Ok(())
    }

    /// True if `msg` is a ConnectionBind whose `nonce` was minted for the
    /// control connection of the allocation that owns the pending peer
    /// connection it names: such a nonce is as fresh as the one the data
    /// connection would get, and the credential check that follows is
    /// unchanged.
    ///
    /// Why: nonces are bound to the client's transport address (see
    /// [`crate::proto::auth`]), and RFC 6062 §5.4 has the client send
    /// ConnectionBind on a *new* connection, which clients sign with the
    /// nonce their control connection holds (coturn's `turnutils_uclient`
    /// does). A 438 there would add a round trip on a connection that
    /// clients read as raw data from the start: uclient reads at most one
    /// of its message lengths (`-l`) from it, so a 438 longer than that
    /// (96 bytes plus the realm's length beyond 8) was cut in two and every
    /// bind failed.
    ///
    /// A replay of a captured ConnectionBind from elsewhere could only win
    /// while the connection is still pending, i.e. by racing the client on
    /// a plain TCP path that an on-path attacker controls anyway.
    pub(super) fn nonce_of_control_connection(&self, msg: &Message<'_>, nonce: &[u8], unix_secs: u64) -> bool {
        if msg.method() != method::CONNECTION_BIND {
            return false;
        }
        let Ok(ConnectionBindRequest { id }) = ConnectionBindRequest::parse(msg) else {
            return false;
        };
        match self.connections.get(&id) {
            Some(c) if matches!(c.state, PeerConnectionState::Pending { .. }) => {
                self.credentials.check_nonce(nonce, c.allocation.remote, unix_secs) == NonceCheck::Valid
            }
            _ => false,
        }
    }

    /// Whether the allocation of `client` may hold one more peer
    /// connection, under the caps per allocation and in all; if so, takes
    /// its place in the count of the whole server (shared by every shard,
    /// see [`crate::proto::quota`]), which [`Self::insert_connection`],
    /// called right after, then holds.
    fn reserve_connection(&self, client: ClientAddr) -> Result<(), LimitRefusal> {
        let held = self.allocations.get(&client).map_or(0, |a| a.connections.len());
        if held >= self.config.max_peer_connections_per_allocation {
            return Err(LimitRefusal::PeerConnectionsPerAllocation);
        }
        if !self.quota.try_acquire_peer_connection(self.config.max_peer_connections) {
            return Err(LimitRefusal::PeerConnectionsTotal);
        }
        Ok(())
    }

    /// Inserts a connection whose place [`Self::reserve_connection`] took.
    pub(super) fn insert_connection(
        &mut self,
        client: ClientAddr,
        peer: PeerAddr,
        state: PeerConnectionState,
    ) -> ConnectionId {
        debug_assert!(
            self.allocations.get(&client).map_or(0, |a| a.connections.len())
                < self.config.max_peer_connections_per_allocation,
            "peer connection beyond a cap"
        );
        // The id carries this core's shard (see `ConnectionId`), so a data
        // connection accepted by another shard can be sent here. Serials
        // wrap after 2^24 - 1 connections; one still held is skipped, so
        // ids stay unique. The loop ends: `max_peer_connections` (at most
        // 2^20, see the config) is below the 2^24 - 1 serials.
        debug_assert!(self.connections.len() < ConnectionId::MAX_SERIAL as usize);
        let id = loop {
            self.next_connection = self.next_connection % ConnectionId::MAX_SERIAL + 1;
            let id = ConnectionId::new(self.shard, self.next_connection);
            if !self.connections.contains_key(&id) {
                break id;
            }
        };
        self.connections.insert(
            id,
            PeerConnection {
                allocation: client,
                peer,
                state,
            },
        );
        if let Some(allocation) = self.allocations.get_mut(&client) {
            allocation.connections.push(id);
        }
        id
    }

    /// Forgets peer connection `id` and tells the driver to close it.
    pub(super) fn remove_connection(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        self.quota.release_peer_connection();
        if let PeerConnectionState::Pending { expires } = connection.state {
            self.timers.remove(&(expires, Timer::Connection(id)));
        }
        if let Some(allocation) = self.allocations.get_mut(&connection.allocation) {
            allocation.connections.retain(|c| *c != id);
        }
        self.effects.push_back(Effect::ClosePeerConnection { id });
    }
}
