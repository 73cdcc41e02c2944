//! The STUN/TURN server state machine: STUN Binding (RFC 8489 §6.3, with
//! RFC 5780 NAT behaviour discovery) and TURN allocations, permissions, channels and relaying (RFC 8656), with
//! TCP relays (RFC 6062).
//!
//! Contract: the driver calls
//! * [`Server::handle_client_packet`] for every datagram/frame from a client
//!   (STUN or ChannelData); relayed data comes back as a [`ToPeer`]
//!   borrowing the packet, control answers go into the effect queue;
//! * [`Server::handle_peer_packet`] for every datagram a relay socket gets;
//!   the answer [`ToClient`] names the bytes to send, already framed in
//!   place in the buffer's headroom;
//! * [`Server::handle_timeout`] when [`Server::poll_timeout`] is due;
//! * the `handle_*peer_connection*` methods for RFC 6062 peer connections,
//!   and [`Server::handle_spliced_bytes`] for every read of a splice;
//!
//! and after each call drains [`Server::poll_effect`] until `None`.
//!
//! Control plane and data plane have different shapes on purpose: requests
//! may allocate (a `Vec<u8>` per response), relayed packets never do.
//!
//! Where each rule lives:
//! * this file: the API, request dispatch, and timers;
//! * [`credential_check`] — the long-term credential check (RFC 8489
//!   §9.2.4) and which unsigned requests are challenged at all;
//! * [`challenge_budget`] — which challenges are sent: streams always,
//!   UDP within a per-source budget and an occasional grace beyond it;
//! * [`request`] — requests parsed into typed values;
//! * [`answer`] — error codes and how answers are encoded and counted;
//! * [`binding`] — Binding, and [`nat_discovery`] — the addresses its
//!   answers may leave from (RFC 5780);
//! * [`allocate`] — Allocate and Refresh (RFC 8656 §7);
//! * [`allocation`] — the allocation model and its indexes;
//! * [`admin`] — the operator's list of allocations, and ending them;
//! * [`permissions`] — CreatePermission and ChannelBind (§9, §12);
//! * [`data_plane`] — Send/Data indications and ChannelData (§11, §12);
//! * [`tcp_relay`] — Connect, ConnectionBind and peer connections (RFC 6062);
//! * [`hairpin`] — relay ↔ relay behind a 1:1 NAT;
//! * [`relay_binder`] — the driver's side of relay sockets;
//! * [`try_alternate`] — 300 Try Alternate towards a sibling instance;
//! * [`fast_path`] — routes for the kernel's fast path, and its counts.
//!
//! Invariants (each stated again where it is kept):
//! * `by_relay` mirrors `allocations`, and `live` holds exactly the relays
//!   of this core's allocations among those of other shards (see
//!   [`allocation`]);
//! * `timers` holds exactly one `(expires, Timer::Allocation(client))` per
//!   allocation, with the allocation's deadline, one
//!   `(expires, Timer::Reservation(token))` per reservation this core made
//!   (claimed or not: forgetting a claimed one is a no-op), and one
//!   `Timer::Connection` per pending peer connection (see [`tcp_relay`]),
//!   and one `Timer::FastPathFold` while the fast path has routes (see
//!   [`fast_path`]).

mod admin;
mod allocate;
mod allocation;
mod answer;
mod binding;
mod challenge_budget;
mod credential_check;
mod data_plane;
mod failure_limits;
mod fast_path;
mod hairpin;
mod nat_discovery;
mod permissions;
mod relay_binder;
mod request;
mod tcp_relay;
#[cfg(test)]
mod tests;
mod try_alternate;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::hmac;
use tracing::{debug, trace};

pub use self::admin::{AllocationId, AllocationSummary, BadAllocationId};
pub use self::allocate::{DEFAULT_ALLOCATION_LIFETIME, RESERVATION_LIFETIME};
pub use self::allocation::PERMISSION_LIFETIME;
pub use self::answer::ErrorCode;
pub use self::data_plane::{ToClient, ToPeer, PEER_HEADROOM, PEER_TAILROOM};
pub use self::fast_path::{FastPathRoutes, FastRoute, FOLD_INTERVAL};
pub use self::hairpin::RelayHairpin;
pub use self::nat_discovery::{AddressPair, NatDiscovery};
pub use self::permissions::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME};
pub use self::relay_binder::{PortWant, RelayBindError, RelayBinder};
pub use self::tcp_relay::{
    connection_bind_shard, SpliceDirection, SpliceVerdict, CONNECTION_BIND_TIMEOUT, MAX_SPLICE_CHUNK,
};
pub use self::try_alternate::{Alternates, Sibling};

use self::allocation::Allocation;
use self::answer::Failure;
use self::challenge_budget::{Admission, ChallengeBudget};
use self::credential_check::Authenticated;
use self::failure_limits::FailureLimits;
use self::fast_path::FastPath;
use self::tcp_relay::PeerConnection;
use super::addr::{ClientAddr, ConnectionId, PeerAddr, RelayAddr, ShardId};
use super::auth::Credentials;
use super::live_relays::LiveRelays;
use super::method::Method;
use super::peer_filter::PeerFilter;
use super::quota::AllocationQuota;
use super::revocations::Revocations;
use super::source::SourceKey;
use super::stats::{Counters, EndReason, LimitRefusal, Snapshot};
use super::stun::{self, Class, Message, TransactionId};
use super::xorshift::XorShift;
use super::Now;

/// Settings of one core, already validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// SOFTWARE attribute; `None` omits it.
    pub software: Option<String>,
    /// The relay IPs advertised in XOR-RELAYED-ADDRESS, per family; a
    /// family without one cannot be allocated (440).
    pub relay_ip_v4: Option<Ipv4Addr>,
    pub relay_ip_v6: Option<Ipv6Addr>,
    pub max_allocation_lifetime: Duration,
    pub max_permissions: usize,
    pub max_channels: usize,
    pub hairpin: RelayHairpin,
    /// Bytes a second one allocation may relay, both directions together;
    /// 0: no limit.
    pub allocation_rate: u64,
    /// Bytes a second of 401/438 challenges one source address may get;
    /// 0: no limit.
    pub challenge_rate: u64,
    /// RFC 6062 peer connections one TCP allocation may hold, and this
    /// core may hold in all. Every TCP allocation lives on the shard that
    /// serves the stream listeners (see `net`), so this core's total is
    /// the server's.
    pub max_peer_connections_per_allocation: usize,
    pub max_peer_connections: usize,
    /// Siblings that take the Allocates this server sheds.
    pub alternates: Alternates,
    /// The UDP address pairs of RFC 5780 NAT behaviour discovery; empty:
    /// none (see [`nat_discovery`]).
    pub nat_discovery: NatDiscovery,
}

/// Something the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `bytes` to `to.remote` over `to.transport`: over UDP from the
    /// listener bound to `to.local`, over a stream on the connection `to`
    /// names. `to` is the client's 5-tuple but for RFC 5780 Binding
    /// answers, which may leave from another of the server's UDP
    /// addresses (CHANGE-REQUEST) and go to another port of the client's
    /// IP (RESPONSE-PORT); see [`binding`].
    Transmit { to: ClientAddr, bytes: Vec<u8> },
    /// Open a TCP connection from the TCP relay `relay` to `peer` and
    /// report with [`Server::handle_peer_connect_result`] (RFC 6062 §5.2);
    /// a `ClosePeerConnection` for `id` before that ends the attempt.
    ConnectPeer {
        id: ConnectionId,
        relay: RelayAddr,
        peer: PeerAddr,
    },
    /// After the pending Transmit to `data` (the ConnectionBind answer),
    /// that connection carries raw bytes to and from peer connection `id`.
    Splice { id: ConnectionId, data: ClientAddr },
    /// Close peer connection `id`, and its data connection if it has one;
    /// a connect still under way for it is abandoned.
    ClosePeerConnection { id: ConnectionId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Allocation(ClientAddr),
    Reservation(u64),
    /// A peer connection not bound in time (RFC 6062 §5.2, §5.3).
    Connection(ConnectionId),
    /// The fast path's counts are due to be folded (see [`fast_path`]).
    FastPathFold,
}

pub struct Server<B> {
    config: ServerConfig,
    credentials: Credentials,
    filter: PeerFilter,
    quota: Arc<AllocationQuota>,
    /// This server's live relays, shared by every shard: this core marks
    /// its own (see [`allocation`]), the peer filter reads them.
    live: Arc<LiveRelays>,
    /// The shard this core runs on, recorded as the owner of its relays.
    shard: ShardId,
    binder: B,
    /// Boxed: the table keeps spare slots, which then cost a pointer each
    /// instead of a whole allocation.
    allocations: HashMap<ClientAddr, Box<Allocation>>,
    by_relay: HashMap<RelayAddr, ClientAddr>,
    /// TCP peer connections (RFC 6062) by id; each is listed in its
    /// allocation's `connections`.
    connections: HashMap<ConnectionId, PeerConnection>,
    next_connection: u32,
    /// Serial of the last [`AllocationId`] this core handed out.
    allocation_serial: u64,
    /// Usernames the operator revoked, shared by every shard.
    revocations: Arc<Revocations>,
    timers: BTreeSet<(Instant, Timer)>,
    effects: VecDeque<Effect>,
    /// Keyed PRF for reservation tokens, so they cannot be guessed.
    token_key: hmac::Key,
    token_counter: u64,
    /// Transaction ids of the indications the server sends (Data,
    /// ConnectionAttempt): they carry no security meaning but should not
    /// repeat.
    indication_ids: XorShift,
    /// Which challenges are sent (per-source budget and grace over UDP).
    challenges: ChallengeBudget,
    failures: FailureLimits,
    /// Checked against a request whose username has no key, so that it
    /// costs what a real check costs.
    unknown_user_key: hmac::Key,
    counters: Counters,
    /// Which sibling the next 300 names (see [`try_alternate`]).
    alternate_turn: usize,
    /// The kernel's fast path, if the driver has one (see [`fast_path`]).
    fast: Option<FastPath>,
}

impl<B: RelayBinder> Server<B> {
    /// `seed` is 32 random bytes from the driver (the core has no RNG).
    /// `quota` and `live` are shared by every shard of the process.
    pub fn new(
        config: ServerConfig,
        credentials: Credentials,
        filter: PeerFilter,
        quota: Arc<AllocationQuota>,
        live: Arc<LiveRelays>,
        binder: B,
        seed: [u8; 32],
    ) -> Server<B> {
        let mut ids_seed = [0u8; 8];
        ids_seed.copy_from_slice(&seed[..8]);
        let challenges = ChallengeBudget::new(&seed, config.challenge_rate);
        Server {
            config,
            credentials,
            filter,
            quota,
            live,
            shard: ShardId::default(),
            binder,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            connections: HashMap::new(),
            next_connection: 0,
            allocation_serial: 0,
            revocations: Arc::default(),
            timers: BTreeSet::new(),
            effects: VecDeque::new(),
            token_key: hmac::Key::new(hmac::HMAC_SHA256, &seed),
            token_counter: 0,
            indication_ids: XorShift::new(u64::from_le_bytes(ids_seed)),
            challenges,
            failures: FailureLimits::new(&seed),
            unknown_user_key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &seed[..16]),
            counters: Counters::default(),
            alternate_turn: 0,
            fast: None,
        }
    }

    /// The core of shard `shard` (the default is shard 0).
    pub fn on_shard(mut self, shard: ShardId) -> Self {
        self.shard = shard;
        self
    }

    /// The revoked usernames this core refuses (by default an empty set
    /// of its own); every shard of a process shares one.
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = revocations;
        self
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn binder(&self) -> &B {
        &self.binder
    }

    pub fn has_allocation(&self, client: &ClientAddr) -> bool {
        self.allocations.contains_key(client)
    }

    /// Relayed transport addresses in use (a dual allocation has two).
    pub fn relay_count(&self) -> usize {
        self.by_relay.len()
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Applies a reloaded configuration: credentials, peer filter, SOFTWARE
    /// and the per-allocation and peer connection limits. The relay addresses and the NAT
    /// mapping stay (they are bound to the running sockets). Existing
    /// allocations, permissions and channels are kept, also where they
    /// exceed new limits; new requests are judged by the new rules.
    /// Routes on the fast path are judged again by the new peer filter.
    pub fn reconfigure(&mut self, config: ServerConfig, credentials: Credentials, filter: PeerFilter, now: Instant) {
        self.config.software = config.software;
        self.config.max_allocation_lifetime = config.max_allocation_lifetime;
        self.config.max_permissions = config.max_permissions;
        self.config.max_channels = config.max_channels;
        self.config.allocation_rate = config.allocation_rate;
        self.challenges.set_rate(config.challenge_rate);
        self.config.challenge_rate = config.challenge_rate;
        self.config.max_peer_connections_per_allocation = config.max_peer_connections_per_allocation;
        self.config.max_peer_connections = config.max_peer_connections;
        self.config.alternates = config.alternates;
        self.credentials = credentials;
        self.filter = filter;
        self.resync_routes(now);
    }

    /// The counters and what is live now, for metrics. Walks every
    /// allocation, so call it now and then, not per packet.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut snapshot = Snapshot {
            counters: self.counters.clone(),
            to_peer: self.counters.ended_to_peer,
            to_client: self.counters.ended_to_client,
            peer_connections: self.connections.len() as u64,
            ..Snapshot::default()
        };
        for (client, a) in &self.allocations {
            snapshot.allocations[client.transport as usize][a.relays.family_index()] += 1;
            snapshot.permissions += a.permissions.iter().filter(|p| p.expires > now).count() as u64;
            snapshot.channels += a.channels.iter().filter(|c| c.expires > now).count() as u64;
            snapshot.to_peer.add(a.to_peer);
            snapshot.to_client.add(a.to_client);
        }
        snapshot
    }

    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The next instant [`Server::handle_timeout`] has work to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Fires every timer due at `now`. Each is taken off the queue before
    /// it acts, so a timer whose owner is already gone cannot fire twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.timers.first().is_some_and(|(at, _)| *at <= now) {
            let Some((_, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::Allocation(client) => self.expire_allocation(client, now),
                Timer::Reservation(token) => self.expire_reservation(token),
                Timer::Connection(id) => self.expire_pending_connection(id),
                Timer::FastPathFold => self.fold_routes(now),
            }
        }
    }

    /// A stream client's connection is gone: its allocation goes with it
    /// (RFC 8656 §3.1: a TCP/TLS allocation lives on one connection), and
    /// if it was an RFC 6062 data connection, so does its peer connection.
    pub fn handle_connection_closed(&mut self, client: ClientAddr, now: Instant) {
        self.remove_allocation(client, EndReason::ConnectionClosed, now);
        self.close_data_connection(client);
    }

    /// Handles one packet from a client: a STUN message or ChannelData.
    pub fn handle_client_packet<'p>(&mut self, client: ClientAddr, packet: &'p [u8], now: Now) -> Option<ToPeer<'p>> {
        let mut route = match packet.first()? >> 6 {
            0b01 => self.client_channel_data(client, packet, now.mono),
            0b00 => match Message::parse(packet) {
                Ok(msg) => self.client_stun(client, &msg, now),
                Err(e) => {
                    trace!(%client, error = %e, "dropping malformed STUN message");
                    None
                }
            },
            _ => None,
        }?;
        route.local = self.local_relay(route.relay, route.peer);
        if route.local.is_none() {
            route.peer = self.config.hairpin.outbound(route.peer);
        }
        Some(route)
    }

    fn client_stun<'p>(&mut self, client: ClientAddr, msg: &Message<'p>, now: Now) -> Option<ToPeer<'p>> {
        match msg.class() {
            Class::Request => {
                if let Some(bytes) = self.request(client, msg, now) {
                    self.effects.push_back(Effect::Transmit { to: client, bytes });
                }
                None
            }
            Class::Indication if msg.method() == stun::method::SEND => self.send_indication(client, msg, now.mono),
            // Binding indications are keepalives; responses are not ours.
            _ => None,
        }
    }

    /// The answer to a request; `None` when it is queued by the handler
    /// itself (Binding from the address it names, Connect later,
    /// ConnectionBind before a Splice).
    /// Every answer is counted once: errors where they are encoded,
    /// successes here.
    fn request(&mut self, client: ClientAddr, msg: &Message<'_>, now: Now) -> Option<Vec<u8>> {
        let method = Method::from_wire(msg.method());
        let (result, key) = match method {
            None => (Err(ErrorCode::BadRequest.into()), None),
            // Binding needs no credentials (RFC 8489 §6.3), and queues its
            // answer itself (it may leave from another address).
            Some(Method::Binding) => (self.binding(client, msg).map(|()| None), None),
            Some(method) => match self
                .challengeable(method, client, msg)
                .and_then(|()| self.authenticate(client, msg, now))
            {
                Ok(auth) => (
                    self.authenticated_request(method, client, msg, &auth, now.mono),
                    Some(auth.key),
                ),
                Err(failure) => (Err(failure), None),
            },
        };
        match result {
            Ok(answer) => {
                if let (Some(method), Some(_)) = (method, &answer) {
                    self.count_success(method);
                }
                answer
            }
            Err(failure) => {
                debug!(%client, method = msg.method(), ?failure, "request refused");
                let (answer, code) = self.encode_failure(client, msg, failure, key.as_ref(), now.unix_secs);
                // Over UDP, challenges to one source spend its budget; beyond
                // it the request goes unanswered but for a grace now and
                // then, which a real client's retransmission gets.
                if let Failure::Challenge(_) = failure {
                    match self.challenges.admit(client, answer.len() as u64, now.mono) {
                        Admission::Refused => {
                            self.counters.refusals[LimitRefusal::ChallengeBudget as usize] += 1;
                            trace!(%client, "challenge budget of the source spent; request dropped");
                            return None;
                        }
                        Admission::Grace => trace!(%client, "challenge budget of the source spent; a grace"),
                        Admission::Stream | Admission::Budget => {}
                    }
                }
                self.counters.request(method, code.code());
                Some(answer)
            }
        }
    }

    fn authenticated_request(
        &mut self,
        method: Method,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, Failure> {
        Failure::check_unknown(msg)?;
        match method {
            // Answered alike with credentials or without.
            Method::Binding => self.binding(client, msg).map(|()| None),
            Method::Allocate => self.allocate(client, msg, auth, now).map(Some),
            Method::Refresh => self.refresh(client, msg, auth, now).map(Some),
            Method::CreatePermission => self.create_permission(client, msg, auth, now).map(Some),
            Method::ChannelBind => self.channel_bind(client, msg, auth, now).map(Some),
            Method::Connect => self.connect(client, msg, auth, now).map(|()| None),
            Method::ConnectionBind => self.connection_bind(client, msg, auth).map(|()| None),
        }
    }
}

/// RFC 5389 §15.3 allows USERNAME up to 513 bytes (RFC 8489 §14.3 says
/// fewer than 509); longer is malformed.
const MAX_USERNAME_BYTES: usize = 513;

/// Who `client` counts against in the per-source limits.
pub(super) fn source_key(client: ClientAddr) -> SourceKey {
    SourceKey::from(client.remote.ip())
}

/// A fresh transaction id for an indication the server sends. A free
/// function over the one field, so the data plane can call it while it
/// holds an allocation borrowed from the server.
fn next_indication_id(ids: &mut XorShift) -> TransactionId {
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&ids.next_u64().to_le_bytes());
    id
}
